"""Actors and critics for continuous control (`sac`, `td3` and off-policy agents of yours).

Actions live in [-1, 1]^d inside the agent (what the replay buffer stores, what the critics
see, where exploration noise is added), as SB3 does; `ActionScale` maps them to the env's
box on the way out. Both actors end in tanh:

- `SquashedGaussianActor` (SAC): a = tanh(u), u ~ N(mu(s), sigma(s)), with the log-prob
  corrected for the squash: log pi(a|s) = log N(u) - sum log(1 - tanh(u)^2), written in
  the numerically stable form 2 (log 2 - u - softplus(-2u)).
- `DeterministicActor` (TD3, DDPG): a = tanh(mu(s)); `smoothed` adds TD3's clipped target
  policy noise.

`TwinQ` holds both critics Q1, Q2(s, a) as one batched network: each layer is one batched
matmul over the pair (`torch.baddbmm`), so a critic step costs the kernels of one MLP, and one
optimizer steps both (SB3 runs two MLPs, each op twice).
"""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from lab.api import LabError
from lab.networks import mlp

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's and the SAC paper's clamp
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_2 = math.log(2.0)


def box_actions(space: gym.Space, agent: str) -> int:
    """The action dimension of a 1-D Box, or one LabError saying what the agent needs."""
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise LabError(f"{agent} needs continuous actions (a 1-D Box), not {space}; use an env like Pendulum-v1 "
                       "or HalfCheetah-v5 (dqn is for discrete actions)")
    if not (torch.isfinite(torch.as_tensor(space.low)).all() and torch.isfinite(torch.as_tensor(space.high)).all()):
        raise LabError(f"{agent} needs a bounded action box; {space} has infinite bounds")
    return int(space.shape[0])


class ActionScale(nn.Module):
    """[-1, 1]^d <-> the env's box [low, high]."""

    def __init__(self, space: gym.spaces.Box) -> None:
        super().__init__()
        low = torch.as_tensor(space.low, dtype=torch.float32)
        high = torch.as_tensor(space.high, dtype=torch.float32)
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)

    def to_env(self, actions: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * actions.clamp(-1.0, 1.0)

    def from_env(self, actions: torch.Tensor) -> torch.Tensor:
        return ((actions - self.center) / self.half_range).clamp(-1.0, 1.0)


class SquashedGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s))) with state-dependent sigma (SAC)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.body, features = mlp(obs_dim, hidden)
        self.mu = nn.Linear(features, action_dim)
        self.log_std = nn.Linear(features, action_dim)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(obs)
        return self.mu(features), self.log_std(features).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, log pi(a|s)) with a reparameterised draw (gradients flow through a)."""
        mean, log_std = self.distribution(obs)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.square() - log_std - HALF_LOG_2PI).sum(-1)
        log_prob = log_prob - (2 * (LOG_2 - u - F.softplus(-2 * u))).sum(-1)  # the tanh's Jacobian
        return torch.tanh(u), log_prob

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: tanh of the mean (how SAC is evaluated)."""
        return torch.tanh(self.distribution(obs)[0])


class DeterministicActor(nn.Module):
    """mu(s) in [-1, 1]^d (TD3, DDPG)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        body, features = mlp(obs_dim, hidden)
        self.net = nn.Sequential(*body, nn.Linear(features, action_dim), nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def smoothed(self, obs: torch.Tensor, noise: float, clip: float, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """mu(s) + clip(N(0, noise), -clip, clip), kept in [-1, 1]: TD3's target policy smoothing."""
        actions = self(obs)
        eps = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=actions.dtype)
        return (actions + (eps * noise).clamp(-clip, clip)).clamp(-1.0, 1.0)


class TwinQ(nn.Module):
    """Q1(s, a) and Q2(s, a) as one batched MLP: `forward` returns both, shape (2, batch);
    `critics=N` makes an ensemble of N the same way (REDQ)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], critics: int = 2) -> None:
        super().__init__()
        sizes = [obs_dim + action_dim, *hidden, 1]
        self.critics = critics
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            # each critic initialised as nn.Linear would be (uniform in +-1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(critics, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(critics, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, actions], dim=-1).expand(self.critics, -1, -1)
        *hidden, (last_weight, last_bias) = zip(self.weights, self.biases, strict=True)
        for weight, bias in hidden:
            x = F.relu(torch.baddbmm(bias, x, weight))
        # the 1-unit output layer as a product and a sum: a matmul with one column is slow on a CPU
        return (x * last_weight.transpose(1, 2)).sum(-1) + last_bias.squeeze(-1)
