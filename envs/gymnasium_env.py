"""Classic-control tasks (CartPole, Acrobot, MountainCar, Pendulum) through the lab factory."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import torch

from lab.envs.torch_vec import GymTorchVecEnv
from lab.errors import LabError

CLASSIC_IDS: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1")


def make_classic(
    env_id: str,
    *,
    num_envs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    evaluation: bool = False,
    render: bool = False,
    **options: Any,
) -> GymTorchVecEnv:
    """Make `num_envs` copies of a classic-control task (same for training and evaluation:
    these tasks have no preprocessing to switch off)."""
    if env_id not in CLASSIC_IDS:
        from lab.errors import unknown

        raise unknown("classic-control env", env_id, CLASSIC_IDS, "see `lab plugins` for env ids")
    if options:
        raise LabError(f"{env_id} takes no env options (got {', '.join(sorted(options))}); remove them")
    if num_envs < 1:
        raise LabError(f"num_envs must be >= 1 (got {num_envs})")
    if render:  # pygame draws off-screen; without this SDL complains about a missing display
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    vec = gym.make_vec(
        env_id,
        num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
        render_mode="rgb_array" if render else None,
    )
    return GymTorchVecEnv(vec, torch.device(device), seed)
