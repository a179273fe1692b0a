"""The vector-environment contract every env factory returns.

Algorithms only ever see torch tensors on the training device: an env factory wraps
whatever simulator it uses (ale-py's threaded vector env, gymnasium's SyncVectorEnv, ...)
so that observations cross to the device once and all agents share one interface.

Autoreset follows gymnasium's NEXT_STEP convention: after an env reports
`terminated | truncated`, its next `step` ignores the action and returns the first
observation of a new episode with reward 0. Buffers use this to never store that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import torch


@dataclass(frozen=True)
class Episode:
    """One finished episode as the user sees it: the true game score, not the clipped reward."""

    episode_return: float
    length: int


@runtime_checkable
class VecEnv(Protocol):
    num_envs: int
    device: torch.device
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset all envs; returns observations (num_envs, *obs_shape) on `device`."""

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step all envs: (obs, reward float32, terminated bool, truncated bool, info), on `device`.

        `reward` is the learning reward (clipped for Atari when configured); true scores
        reach the logs through `pop_episodes`.
        """

    def pop_episodes(self) -> list[Episode]:
        """Episodes (whole games) finished since the last call, oldest first."""

    def close(self) -> None: ...
