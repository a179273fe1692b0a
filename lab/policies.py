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
from torch.distributions import Categorical, Distribution, Normal

from lab.errors import LabError
from lab.networks import flat_size, mlp, nature_cnn


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

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """The action distribution and V(s) for a batch of observations."""
        features = self._features(obs)
        logits = self.policy_head(self.actor_body(features))
        value = self.value_head(self.critic_body(features)).squeeze(-1)
        if self.continuous:
            return Normal(logits, self.log_std.exp().expand_as(logits)), value
        return Categorical(logits=logits), value

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        features = self._features(obs)
        return self.value_head(self.critic_body(features)).squeeze(-1)

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        log_prob = dist.log_prob(actions)
        return log_prob.sum(-1) if self.continuous else log_prob

    def entropy(self, dist: Distribution) -> torch.Tensor:
        entropy = dist.entropy()
        return entropy.sum(-1) if self.continuous else entropy

    def step(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> PolicyStep:
        """Sample actions (with `generator`: a run's stream) with their log-probabilities and values."""
        dist, value = self(obs)
        if self.continuous:
            noise = torch.randn(dist.mean.shape, generator=generator, device=obs.device)
            actions = dist.mean + dist.stddev * noise
        else:
            uniform = torch.rand((obs.shape[0], 1), generator=generator, device=obs.device)
            actions = torch.searchsorted(dist.probs.cumsum(-1), uniform).squeeze(-1).clamp_max(dist.probs.shape[-1] - 1)
        return PolicyStep(actions, self.log_prob(dist, actions), value)

    def act(self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Env-ready actions: the mode (deterministic) or a sample, clipped to the action box."""
        if deterministic:
            dist, _ = self(obs)
            actions = dist.mean if self.continuous else dist.probs.argmax(-1)
        else:
            actions = self.step(obs, generator).actions
        return self.to_env(actions)

    def to_env(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low) if self.continuous else actions
