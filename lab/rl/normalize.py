"""Observation and reward normalisation from running statistics (SB3's VecNormalize).

Observations are standardised by a running mean and variance and clipped; rewards are
divided by the running standard deviation of the discounted return (not centred) and
clipped. Both update only while training; evaluation and `lab.load` apply the saved
statistics unchanged. Everything lives on the training device and is saved with the
algorithm's state.
"""

from __future__ import annotations

from typing import Any

import torch


class RunningMeanStd:
    """Mean and variance over all batches seen, merged with the parallel (Chan et al.) update."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4) -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(epsilon, dtype=torch.float64, device=device)

    def update(self, batch: torch.Tensor) -> None:
        batch = batch.double()
        batch_mean, batch_var, batch_count = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.var, self.count = (state[k].to(self.mean.device) for k in ("mean", "var", "count"))


class Normalizer:
    """What an agent applies between the env and its networks.

    obs: standardise observations (float observations only: images stay uint8).
    reward: scale rewards by the std of the discounted return, with `gamma`.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_envs: int, device: torch.device, *, obs: bool,
                 reward: bool, gamma: float, clip_obs: float = 10.0, clip_reward: float = 10.0,
                 epsilon: float = 1e-8) -> None:
        self.normalize_obs, self.normalize_reward = obs, reward
        self.gamma, self.clip_obs, self.clip_reward, self.epsilon = gamma, clip_obs, clip_reward, epsilon
        self.obs_stats = RunningMeanStd(obs_shape, device)
        self.return_stats = RunningMeanStd((), device)
        self.returns = torch.zeros(num_envs, dtype=torch.float64, device=device)

    def obs(self, obs: torch.Tensor, update: bool = False) -> torch.Tensor:
        """Normalised observations; `update` (training only) first adds them to the statistics."""
        if not self.normalize_obs:
            return obs
        if update:
            self.obs_stats.update(obs)
        scaled = (obs.double() - self.obs_stats.mean) / torch.sqrt(self.obs_stats.var + self.epsilon)
        return scaled.clamp(-self.clip_obs, self.clip_obs).to(obs.dtype)

    def reward(self, reward: torch.Tensor, done: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        """Scaled training rewards; `done` ends each env's discounted return (a new one starts),
        `counted` leaves autoreset steps (no real transition) out of the statistics."""
        if not self.normalize_reward:
            return reward
        self.returns = self.returns * self.gamma + reward.double()
        if counted.any():
            self.return_stats.update(self.returns[counted])
        self.returns = torch.where(done, 0.0, self.returns)
        scaled = reward.double() / torch.sqrt(self.return_stats.var + self.epsilon)
        return scaled.clamp(-self.clip_reward, self.clip_reward).to(reward.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"obs": self.obs_stats.state_dict(), "return": self.return_stats.state_dict(), "returns": self.returns}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.obs_stats.load_state_dict(state["obs"])
        self.return_stats.load_state_dict(state["return"])
        self.returns = state["returns"].to(self.returns.device)
