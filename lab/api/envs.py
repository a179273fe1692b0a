"""The vector-environment contract every env factory returns.

Algorithms only ever see torch tensors on the training device: an env factory wraps
whatever simulator it uses (ale-py's threaded vector env, gymnasium's SyncVectorEnv, ...)
so that observations cross to the device once and all agents share one interface.

Autoreset follows gymnasium's NEXT_STEP convention: after an env reports
`terminated | truncated`, its next `step` ignores the action and returns the first
observation of a new episode with reward 0, and never reports a done itself. Buffers use
this to never store that step (`lab.buffers.boundaries`); `lab.envcheck` checks it.

An env may also implement `state_dict() -> dict | None` and `load_state_dict(state)`: the
runner then saves it with checkpoints and a resumed run continues the same episodes.
Without them (or when `state_dict` returns None) a resumed run restarts the env from a
seed derived from (run seed, global_step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch


@dataclass(frozen=True)
class EnvFamily:
    """What the envs of one family share beyond their factory: `register(env_id, factory,
    family=...)` in `register_envs`, the same object for every id or glob of the family.

    name: presets may be keyed by it (`{"atari": {...}}` applies to every Atari id).
    options: a dataclass of the settings its factory takes (`frame_stack`, ...): each field
        becomes a run flag (`--frame-stack`) and YAML key for runs on this family's envs,
        and `ctx.make_env` passes the resolved values to every call of the factory.
    reference_scores: env_id -> (random score, human score), or None for a game without
        published ones; evaluation then logs `eval/normalized_score` = (score - random) /
        (human - random), and `lab compare` normalises finals by the same scores.
    """

    name: str
    options: type | None = None
    reference_scores: Callable[[str], tuple[float, float] | None] | None = None

    def normalized_score(self, env_id: str, score: float) -> float | None:
        """(score - random) / (human - random) for `env_id`, or None where the family has no
        reference scores for it."""
        reference = self.reference_scores(env_id) if self.reference_scores is not None else None
        if reference is None:
            return None
        random, human = reference
        return (score - random) / (human - random)


@dataclass(frozen=True)
class Episode:
    """One finished episode as the user sees it: the true game score, not the clipped reward."""

    episode_return: float
    length: int


@runtime_checkable
class VecEnv(Protocol):
    """What an env factory returns: `num_envs` envs stepped together, tensors on `device`
    (the module docstring gives the autoreset and resume rules; `lab.envcheck` checks them)."""

    num_envs: int
    device: torch.device
    single_observation_space: gym.Space[Any]
    single_action_space: gym.Space[Any]

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

    def render(self) -> np.ndarray:
        """An RGB uint8 frame (height, width, 3) of env 0, for evaluation videos; only called
        on an env made with `render=True`."""

    def close(self) -> None:
        """Release the simulators (threads, processes, windows)."""


class TrainingEnv:
    """A training env as `ctx.make_env` hands it out: the factory's env, plus the
    observation the agent acts on next (`obs`) and checkpoint state, so the runner can
    save and restore it without the algorithm's help.

    Every other attribute (`num_envs`, spaces, `frame_stack`, `render`, ...) is the wrapped
    env's. After `load_state_dict`, `restarted` says whether the env continued its
    episodes (False) or had to start new ones (True): a replay buffer must then close the
    episodes it holds (`ReplayBuffer.end_episodes`).
    """

    def __init__(self, env: VecEnv, restart_seed: Callable[[int], int]) -> None:
        self.env = env
        self.obs: torch.Tensor | None = None
        self.restarted = False
        self._restart_seed = restart_seed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset the wrapped env; also keeps the observations as `obs`."""
        self.obs = self.env.reset(seed=seed)
        return self.obs

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step the wrapped env; also keeps the new observations as `obs`."""
        result = self.env.step(actions)
        self.obs = result[0]
        return result

    def state_dict(self) -> dict[str, Any]:
        """The next observations and the env's own state (None when it cannot save one)."""
        saver = getattr(self.env, "state_dict", None)
        return {"obs": self.obs, "env": saver() if saver is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None, step: int) -> None:
        """Continue from `state`, or restart with a seed derived from `step` when it holds no env state."""
        state = state or {}
        saved = state.get("env")
        if saved is not None and hasattr(self.env, "load_state_dict") and state["obs"] is not None:
            self.env.load_state_dict(saved)
            self.obs = state["obs"].to(self.env.device)
            self.restarted = False
        else:
            self.reset(seed=self._restart_seed(step))
            self.restarted = True
