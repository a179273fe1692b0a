"""Emulator back ends for `AtariVecEnv`: both apply the DeepMind frame preprocessing
(noop starts, frame skip 4 with max-pool, 84x84 grey, fire on reset) and hand back single
frames, raw game rewards and lives; everything else is done once, in `AtariVecEnv`.

- `ALEVectorBackend`: ale-py's threaded C++ vector env, for training and evaluation.
- `GymAtariBackend`: gymnasium's single-env `AtariEnv` + `AtariPreprocessing`; slower, but
  it can render RGB frames for evaluation videos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from ale_py.env import AtariEnv
from ale_py.vector_env import AtariVectorEnv

# One Atari step is 4 emulator frames; an episode is cut at 108k frames (30 minutes).
FRAME_SKIP = 4
MAX_EPISODE_FRAMES = 108_000
SCREEN_SIZE = 84


@dataclass(frozen=True)
class AtariSettings:
    """What both back ends need to build the same game."""

    game: str  # ALE ROM id, e.g. "breakout"
    sticky_actions: float
    noop_max: int = 30
    full_action_space: bool = False


StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class ALEVectorBackend:
    """ale-py's `AtariVectorEnv`, asked for single frames, raw rewards and no life-loss terminal."""

    def __init__(self, settings: AtariSettings, num_envs: int) -> None:
        self.num_envs = num_envs
        self.env = AtariVectorEnv(
            settings.game,
            num_envs,
            num_threads=max(1, min(num_envs, os.cpu_count() or 1)),
            max_num_frames_per_episode=MAX_EPISODE_FRAMES,
            repeat_action_probability=settings.sticky_actions,
            full_action_space=settings.full_action_space,
            img_height=SCREEN_SIZE,
            img_width=SCREEN_SIZE,
            stack_num=1,
            frameskip=FRAME_SKIP,
            noop_max=settings.noop_max,
            episodic_life=False,
            reward_clipping=False,
            use_fire_reset=True,
        )
        self.action_set: list[Any] = list(self.env.ale.get_action_set())

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        frames, info = self.env.reset(seed=seed)
        return frames[:, 0], info["lives"]

    def step(self, actions: np.ndarray) -> StepResult:
        frames, rewards, terminated, truncated, info = self.env.step(actions)
        return frames[:, 0], rewards, terminated, truncated, info["lives"]

    def render(self) -> np.ndarray:
        raise RuntimeError("the ALE vector back end cannot render; make the env with render=True")

    def close(self) -> None:
        self.env.close()


class FireOnReset(gym.Wrapper):
    """Press FIRE after each reset, as ale-py's vector env does (games that wait for it)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.fire = meanings.index("FIRE") if "FIRE" in meanings else None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self.fire is not None:
            obs, _, terminated, truncated, info = self.env.step(self.fire)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


def _make_gym_atari(settings: AtariSettings, render: bool) -> gym.Env:
    env: gym.Env = AtariEnv(
        game=settings.game,
        frameskip=1,
        repeat_action_probability=settings.sticky_actions,
        full_action_space=settings.full_action_space,
        max_num_frames_per_episode=MAX_EPISODE_FRAMES,
        render_mode="rgb_array" if render else None,
    )
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=settings.noop_max, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE
    )
    return FireOnReset(env)


class GymAtariBackend:
    """gymnasium's `AtariEnv` per env (same preprocessing), able to render RGB frames."""

    def __init__(self, settings: AtariSettings, num_envs: int, render: bool = True) -> None:
        self.num_envs = num_envs
        self.env = gym.vector.SyncVectorEnv(
            [lambda: _make_gym_atari(settings, render) for _ in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        )
        self.action_set = list(self.env.envs[0].unwrapped._action_set)

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        frames, info = self.env.reset(seed=seed)
        return frames, np.asarray(info["lives"])

    def step(self, actions: np.ndarray) -> StepResult:
        frames, rewards, terminated, truncated, info = self.env.step(actions.astype(np.int64))
        return frames, rewards, terminated, truncated, np.asarray(info["lives"])

    def render(self) -> np.ndarray:
        return np.asarray(self.env.envs[0].render(), dtype=np.uint8)

    def close(self) -> None:
        self.env.close()
