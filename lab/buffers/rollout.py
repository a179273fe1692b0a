"""On-policy rollout storage (PPO, A2C): N envs x T steps on the device, GAE(lambda).

Under gymnasium's NEXT_STEP autoreset the step after an episode ends is not a real
transition: its action is ignored and its reward is 0. The buffer keeps it, masked out
of every minibatch, because the value the agent computed there is V(final observation),
exactly what a truncated episode bootstraps from. So truncation needs no extra value
pass and no info-dict plumbing.

Rollouts are collected and used within one training step, so a checkpoint needs only
`episode_ended` (which envs are due an autoreset step), not the contents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from lab.api import LabError
from lab.buffers.boundaries import step_flags
from lab.memory import allocating, tensor_bytes


class RolloutBatch(NamedTuple):
    """A minibatch of real transitions (autoreset steps left out), flattened over steps and
    envs: observations, actions, their log-probabilities and values at collection time,
    GAE advantages and returns (advantages + values).

    A population's batch (`lab.rl.population`) has the members first: [members, transitions,
    ...]; `weights` is None, or 1 for each real transition and 0 for padding where the members'
    minibatches differ in size. Losses take their means with `mean` and standardise with
    `standardized`, which reduce over the transitions and honour the weights."""

    observations: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    weights: torch.Tensor | None = None

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of per-transition `values` over this batch's real transitions (over the last
        dimension: a population's batches are [members, transitions])."""
        if self.weights is None:
            return values.mean(-1)
        return (values * self.weights).sum(-1) / self.weights.sum(-1)

    def standardized(self, values: torch.Tensor) -> torch.Tensor:
        """`values` less their mean, over their standard deviation (unchanged for one transition)."""
        if self.weights is None:
            if values.shape[-1] < 2:
                return values
            return (values - values.mean(-1, keepdim=True)) / (values.std(-1, keepdim=True) + 1e-8)
        count = self.weights.sum(-1, keepdim=True)
        mean = (values * self.weights).sum(-1, keepdim=True) / count
        std = ((values - mean).square() * self.weights).sum(-1, keepdim=True).div((count - 1).clamp_min(1)).sqrt()
        return torch.where(count > 1, (values - mean) / (std + 1e-8), values)


def rollout_bytes(num_steps: int, num_envs: int, observation_shape: tuple[int, ...], action_shape: tuple[int, ...],
                  observation_dtype: torch.dtype, action_dtype: torch.dtype) -> int:
    """The bytes a `RolloutBuffer` allocates: per transition the observation, the action, five
    float32 (log-probability, value, reward, advantage, return) and three flags."""
    shape = (num_steps, num_envs)
    return (tensor_bytes(shape + tuple(observation_shape), observation_dtype)
            + tensor_bytes(shape + tuple(action_shape), action_dtype)
            + 5 * tensor_bytes(shape, torch.float32) + 3 * tensor_bytes(shape, torch.bool) + num_envs)


class RolloutBuffer:
    """Fixed-size rollout of `num_steps` vector steps from `num_envs` envs."""

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        observation_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: torch.device | str,
        observation_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.int64,
    ) -> None:
        if num_steps < 1 or num_envs < 1:
            raise LabError(f"a rollout needs at least one step and one env, got {num_steps} x {num_envs}")
        self.num_steps, self.num_envs = num_steps, num_envs
        self.observation_shape, self.action_shape = tuple(observation_shape), tuple(action_shape)
        self.device = torch.device(device)
        shape, dev = (num_steps, num_envs), self.device
        nbytes = rollout_bytes(num_steps, num_envs, self.observation_shape, self.action_shape, observation_dtype,
                               action_dtype)
        with allocating(f"a rollout of {num_steps:,} steps x {num_envs:,} envs", nbytes, dev,
                        "lower --n-steps or --num-envs (a rollout holds n_steps x num_envs transitions)"):
            self.observations = torch.zeros(shape + self.observation_shape, dtype=observation_dtype, device=dev)
            self.actions = torch.zeros(shape + self.action_shape, dtype=action_dtype, device=dev)
            self.log_probs = torch.zeros(shape, device=dev)
            self.values = torch.zeros(shape, device=dev)
            self.rewards = torch.zeros(shape, device=dev)
            self.terminated = torch.zeros(shape, dtype=torch.bool, device=dev)
            self.truncated = torch.zeros(shape, dtype=torch.bool, device=dev)
            self.valid = torch.zeros(shape, dtype=torch.bool, device=dev)
            self.advantages = torch.zeros(shape, device=dev)
            self.returns = torch.zeros(shape, device=dev)
        self.step = 0
        # Whether each env's last step ended its episode (its next step is an autoreset step):
        # carried across rollouts, and part of an agent's checkpoint for an exact resume.
        self.episode_ended = torch.zeros(num_envs, dtype=torch.bool, device=dev)

    @property
    def full(self) -> bool:
        """Whether all `num_steps` steps of this rollout are stored (GAE needs a full one)."""
        return self.step == self.num_steps

    def reset(self) -> None:
        """Start the next rollout (episode state carries over)."""
        self.step = 0

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
    ) -> None:
        """Record one vector step: the obs acted on, what the policy did, what the env returned."""
        if self.full:
            raise RuntimeError("rollout buffer is full; compute returns, train, then reset()")
        t = self.step
        valid, terminated, truncated, self.episode_ended = step_flags(
            self.episode_ended, terminated.to(self.device).bool(), truncated.to(self.device).bool())
        self.observations[t] = obs
        self.actions[t] = actions.reshape((self.num_envs, *self.action_shape))
        self.log_probs[t] = log_probs.reshape(self.num_envs)
        self.values[t] = values.reshape(self.num_envs)
        self.rewards[t] = torch.where(valid, rewards.reshape(self.num_envs).float(), 0.0)
        self.terminated[t] = terminated
        self.truncated[t] = truncated
        self.valid[t] = valid
        self.step += 1

    def compute_returns_and_advantage(self, last_values: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """GAE(lambda) advantages and TD(lambda) returns (advantages + values).

        `last_values`: V of the observation after the last step (the final observation
        when that step ended an episode). A terminated step does not bootstrap; a
        truncated one bootstraps from V(final observation); no advantage flows across an
        episode end. Autoreset steps get advantage 0 and are never trained on.
        """
        if not self.full:
            raise RuntimeError(f"rollout holds {self.step} of {self.num_steps} steps")
        next_values = last_values.reshape(self.num_envs).float()
        next_advantage = torch.zeros(self.num_envs, device=self.device)
        for t in reversed(range(self.num_steps)):
            continues = ~(self.terminated[t] | self.truncated[t])
            bootstrap = torch.where(self.terminated[t], 0.0, gamma * next_values)
            delta = self.rewards[t] + bootstrap - self.values[t]
            advantage = delta + gamma * gae_lambda * continues * next_advantage
            self.advantages[t] = torch.where(self.valid[t], advantage, 0.0)
            next_values, next_advantage = self.values[t], self.advantages[t]
        self.returns = self.advantages + self.values

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[RolloutBatch]:
        """Shuffled minibatches over the real transitions (the last one may be smaller)."""
        flat_valid = self.valid[: self.step].reshape(-1)
        indices = flat_valid.nonzero().squeeze(1)
        order = torch.randperm(indices.numel(), generator=generator, device=generator.device if generator else self.device)
        indices = indices[order.to(self.device)]
        fields = [self.observations, self.actions, self.log_probs, self.values, self.advantages, self.returns]
        flat = [f[: self.step].reshape(-1, *f.shape[2:]) for f in fields]
        for start in range(0, indices.numel(), batch_size):
            chosen = indices[start : start + batch_size]
            yield RolloutBatch(*(f.index_select(0, chosen) for f in flat))
