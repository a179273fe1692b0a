"""Actor-critic networks for the policy-gradient agents (`reinforce`, `a2c`, `ppo`).

Discrete actions get a Categorical policy, `Box` actions a diagonal Gaussian with a
state-independent log standard deviation; sampled actions are stored as drawn and clipped
to the box only on their way to the env (as SB3 does), so log-probabilities stay exact.
Image observations share one Nature-CNN trunk between actor and critic; vector
observations get two separate MLPs (SB3's MlpPolicy: tanh by default). Weights start
orthogonal with OpenAI baselines' gains (sqrt 2 in the body, 0.01 for the policy head, 1
for the value), unless `ortho_init=False` (some of RL Zoo's MuJoCo settings).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import torch
from torch import nn

from lab.api import LabError
from lab.networks import flat_size, mlp, nature_cnn

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class PolicyStep(NamedTuple):
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor


def orthogonal_init(module: nn.Module, gain: float) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


class ActorCritic(nn.Module):
    """pi(a|s) and V(s) for one observation and action space."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, net_arch: tuple[int, ...] = (64, 64),
                 log_std_init: float = 0.0, activation: type[nn.Module] = nn.Tanh, ortho_init: bool = True) -> None:
        super().__init__()
        shape = tuple(observation_space.shape)
        self.images = len(shape) == 3
        if isinstance(action_space, gym.spaces.Discrete):
            self.continuous, outputs = False, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.continuous, outputs = True, int(action_space.shape[0])
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))
            self.log_std = nn.Parameter(torch.full((outputs,), float(log_std_init)))
        else:
            raise LabError(f"policy-gradient agents take Discrete or 1-D Box actions, not {action_space}")
        if self.images:  # one trunk for both heads, as in the A3C/PPO Atari papers
            self.trunk, features = nature_cnn(shape[0])
            self.actor_body, self.critic_body = nn.Identity(), nn.Identity()
            actor_features = critic_features = features
        else:
            self.trunk = nn.Flatten()
            self.actor_body, actor_features = mlp(flat_size(shape), net_arch, activation)
            self.critic_body, critic_features = mlp(flat_size(shape), net_arch, activation)
        self.policy_head = nn.Linear(actor_features, outputs)
        self.value_head = nn.Linear(critic_features, 1)
        if ortho_init:
            for body in (self.trunk, self.actor_body, self.critic_body):
                orthogonal_init(body, math.sqrt(2))
            orthogonal_init(self.policy_head, 0.01)
            orthogonal_init(self.value_head, 1.0)
        if self.images:  # NHWC convolutions (after the init, which needs the default layout)
            self.trunk.to(memory_format=torch.channels_last)

    def _features(self, obs: torch.Tensor) -> torch.Tensor:
        if self.images:  # uint8 frames: NHWC while still bytes, then scale to [0, 1]
            return self.trunk(obs.contiguous(memory_format=torch.channels_last).float().div_(255.0))
        return self.trunk(obs.float())

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy output, V(s)): log-probabilities of each action (Categorical) or the mean
        action (Gaussian). The distribution is written out by hand rather than built with
        torch.distributions, whose objects cost more than a small policy's whole step."""
        features = self._features(obs)
        out = self.policy_head(self.actor_body(features))
        value = self.value_head(self.critic_body(features)).squeeze(-1)
        return (out, value) if self.continuous else (torch.log_softmax(out, -1), value)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.critic_body(self._features(obs))).squeeze(-1)

    def log_prob(self, out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.continuous:
            z = (actions - out) / self.log_std.exp()
            return (-0.5 * z.square() - self.log_std - HALF_LOG_2PI).sum(-1)
        return out.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, out: torch.Tensor) -> torch.Tensor:
        if self.continuous:
            return (self.log_std + 0.5 + HALF_LOG_2PI).sum(-1).expand(out.shape[:-1])
        return -(out.exp() * out).sum(-1)

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions drawn from `generator` (a run's stream, so a resumed run draws the same)."""
        return self.from_noise(out, self.noise(out.shape, generator, out.device))

    def noise(self, shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """The random draws `sample` turns into actions for policy outputs of `shape`."""
        if self.continuous:
            return torch.randn(shape, generator=generator, device=device)
        return torch.rand((shape[0], 1), generator=generator, device=device)

    def from_noise(self, out: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions from `noise` (a Gaussian's standard draws, or a uniform per row for a Categorical)."""
        if self.continuous:
            return out + self.log_std.exp() * noise
        index = torch.searchsorted(out.exp().cumsum(-1), noise).squeeze(-1)
        return index.clamp_max(out.shape[-1] - 1)  # a rounding shortfall of the last cumsum

    def mode(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.continuous else out.argmax(-1)

    def step(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> PolicyStep:
        """Sample actions with their log-probabilities and V(s), for a rollout."""
        out, value = self(obs)
        actions = self.sample(out, generator)
        return PolicyStep(actions, self.log_prob(out, actions), value)

    def act(self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Env-ready actions: the mode (deterministic) or a sample, clipped to the action box."""
        out, _ = self(obs)
        return self.to_env(self.mode(out) if deterministic else self.sample(out, generator))

    def to_env(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low) if self.continuous else actions
