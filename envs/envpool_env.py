"""Gymnasium ids simulated by EnvPool (`--env-backend envpool`), as the lab's torch `VecEnv`.

EnvPool steps classic control, Box2D and MuJoCo (v4, v5) tasks in C++ threads. Its
gymnasium pools are gymnasium `VectorEnv`s with NEXT_STEP autoreset, the same dynamics
and time limits as gymnasium's envs, and env i seeded with seed + i, so the lab wraps
them like gymnasium's (`GymTorchVecEnv`) with two differences:
- a pool is seeded only when it is made, so `reset(seed=s)` makes a new pool from `s`;
- its state cannot be captured: `state_dict()` is None and a resumed run restarts the
  envs from a new seed (`lab.vecenv`).

Evaluation envs and envs that render (videos) are gymnasium's (`make_gymnasium`): EnvPool's
MuJoCo renderer needs an OpenGL context a headless machine lacks (MuJoCo then ends the
process), and evaluating on the reference implementation keeps scores comparable between
runs trained on either backend.

Threads: EnvPool's default, `num_threads=0`, one worker thread per core (at most one per
env). For 8 HalfCheetah-v5 envs on the busy 2-core development machine it stepped ~13k
steps/s, 2 threads ~9.5k (the same setting: noise) and 1 thread ~7k, so the default stays.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lab.api import LabError
from lab.api.errors import close_matches
from lab.envs.gymnasium_env import make_gymnasium
from lab.envs.torch_vec import GymTorchVecEnv

# The gymnasium envs EnvPool reimplements; other ids it shares a name with may be other tasks.
GYMNASIUM_MODULES = ("gymnasium.envs.classic_control.", "gymnasium.envs.box2d.", "gymnasium.envs.mujoco.")


def _envpool() -> Any:
    try:
        import envpool
    except ImportError:
        raise LabError("--env-backend envpool needs EnvPool: pip install 'arcade-lab[envpool]' (Python 3.11), "
                       "or use --env-backend gymnasium") from None
    return envpool


@cache
def envpool_ids() -> tuple[str, ...]:
    """The gymnasium ids EnvPool simulates: classic control, Box2D and MuJoCo v4/v5."""
    return tuple(sorted(env_id for env_id in _envpool().list_all_envs() if env_id in gym.registry
                        and str(gym.registry[env_id].entry_point).startswith(GYMNASIUM_MODULES)))


class EnvPoolVecEnv(GymTorchVecEnv):
    """An EnvPool gymnasium pool as a torch `VecEnv`: new pools for seeded resets, never saved."""

    def __init__(self, make_pool: Callable[[int], Any], device: torch.device, seed: int) -> None:
        self._make_pool = make_pool
        self._pool_seed: int | None = seed  # the seed of a pool not reset yet
        super().__init__(self._new_pool(seed), device, seed)

    def _new_pool(self, seed: int) -> Any:
        """A pool with its spaces built, quietly: EnvPool makes float32 Boxes from float64
        bounds, which gymnasium warns about on every new pool."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32")
            pool = self._make_pool(seed)
            _ = pool.single_observation_space, pool.single_action_space  # built on first use
        return pool

    def _reset_simulator(self, seed: int | None) -> np.ndarray:
        if seed is not None and seed != self._pool_seed:
            self.env.close()
            self.env = self._new_pool(seed)
        self._pool_seed = None
        obs, _ = self.env.reset()
        return obs

    def state_dict(self) -> None:
        """None: EnvPool cannot save its envs, so the runner restarts them on resume."""
        return None


def make_envpool(
    env_id: str,
    *,
    num_envs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    evaluation: bool = False,
    render: bool = False,
    **options: Any,
) -> GymTorchVecEnv:
    """`num_envs` EnvPool envs of a gymnasium id; gymnasium's for evaluation and rendering.

    Option `asynchronous` (parallel stepping) is what EnvPool's threads always do.
    """
    if evaluation or render:
        return make_gymnasium(env_id, num_envs=num_envs, seed=seed, device=device, evaluation=evaluation,
                              render=render, env_backend="gymnasium", **options)
    options.pop("asynchronous", None)
    if options:
        raise LabError(f"{env_id} takes only the env option asynchronous (got {', '.join(sorted(options))})")
    if num_envs < 1:
        raise LabError(f"num_envs must be >= 1 (got {num_envs})")
    envpool = _envpool()
    if env_id not in envpool_ids():
        raise LabError(f"EnvPool has no {env_id}{close_matches(env_id, envpool_ids())}; it simulates gymnasium's "
                       "classic control, Box2D and MuJoCo v4/v5 ids (CartPole-v1, LunarLander-v3, HalfCheetah-v5, "
                       "...); use --env-backend gymnasium")
    max_steps = gym.spec(env_id).max_episode_steps

    def make_pool(pool_seed: int) -> Any:
        extra = {} if max_steps is None else {"max_episode_steps": max_steps}
        return envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, batch_size=num_envs, seed=pool_seed,
                            **extra)

    return EnvPoolVecEnv(make_pool, torch.device(device), seed)
