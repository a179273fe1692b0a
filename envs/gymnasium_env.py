"""Any environment registered with gymnasium, as the lab's torch `VecEnv`.

Classic control, Box2D (`pip install 'arcade-lab[box2d]'`), MuJoCo
(`pip install 'arcade-lab[mujoco]'`) and any id a package registers with gymnasium: flat
`Box` observations and `Discrete` or `Box` actions, the same env for training and
evaluation (these tasks have no preprocessing to switch off). Rendering draws off-screen:
pygame through SDL's dummy driver, MuJoCo through EGL (`MUJOCO_GL`, default egl). Option
`asynchronous=True` steps each env in a worker process (gymnasium's AsyncVectorEnv), so
several cores step envs at once; such envs cannot save their state for an exact resume.
Option `env_backend` (`--env-backend`, `lab.envs.backends`) may hand the id to EnvPool.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import torch

from lab.api import LabError
from lab.api.errors import unknown
from lab.envs.backends import choose_backend
from lab.envs.torch_vec import GymTorchVecEnv

CLASSIC_IDS: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
                                "Pendulum-v1")
# What to install when making an id fails for a missing package (gymnasium's entry point module).
EXTRAS = {"box2d": "box2d", "mujoco": "mujoco"}


def gymnasium_ids() -> list[str]:
    return sorted(gym.registry)


def _missing_extra(env_id: str) -> str | None:
    entry = str(gym.registry[env_id].entry_point)
    return next((extra for key, extra in EXTRAS.items() if f".{key}" in entry), None)


def make_gymnasium(
    env_id: str,
    *,
    num_envs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    evaluation: bool = False,
    render: bool = False,
    env_backend: str = "auto",
    **options: Any,
) -> GymTorchVecEnv:
    """`num_envs` copies of a gymnasium id in one synchronous vector env (NEXT_STEP autoreset),
    or EnvPool's envs where `env_backend` picks it (`lab.envs.backends`)."""
    if env_id not in gym.registry:
        raise unknown("env", env_id, gymnasium_ids(), "run `lab plugins` to list environments, "
                      "or install the package that registers it with gymnasium")
    if choose_backend(env_backend) == "envpool":
        from lab.envs.envpool_env import make_envpool  # it builds on this module

        return make_envpool(env_id, num_envs=num_envs, seed=seed, device=device, evaluation=evaluation,
                            render=render, **options)
    asynchronous = bool(options.pop("asynchronous", False))
    if options:
        raise LabError(f"{env_id} takes only the env option asynchronous (got {', '.join(sorted(options))})")
    if num_envs < 1:
        raise LabError(f"num_envs must be >= 1 (got {num_envs})")
    if render:  # draw off-screen: no display is needed (or wanted) for videos
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        if asynchronous and not render:  # one worker process per env: both cores step envs
            vec = gym.make_vec(env_id, num_envs, vectorization_mode="async",
                               vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP})
        elif gym.spec(env_id).vector_entry_point is not None and not render:
            # gymnasium's own batched implementation (CartPole): the same dynamics, all envs in
            # one numpy step instead of a Python loop over envs (NEXT_STEP autoreset too)
            vec = gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point")
        else:
            vec = gym.make_vec(
                env_id,
                num_envs,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
                render_mode="rgb_array" if render else None,
            )
    except (gym.error.DependencyNotInstalled, ImportError) as exc:
        extra = _missing_extra(env_id)
        fix = f"pip install 'arcade-lab[{extra}]'" if extra else "install the package it needs"
        raise LabError(f"{env_id} cannot be made here ({str(exc).splitlines()[0]}); {fix}") from None
    if render:
        _follow_with_track_camera(vec)
    for name, space in (("observations", vec.single_observation_space), ("actions", vec.single_action_space)):
        allowed = (gym.spaces.Box,) if name == "observations" else (gym.spaces.Box, gym.spaces.Discrete)
        if not isinstance(space, allowed):
            vec.close()
            raise LabError(f"{env_id} has {name} of type {type(space).__name__}; the lab handles Box observations "
                           "and Discrete or Box actions (wrap the env in a plugin factory to convert it)")
    return GymTorchVecEnv(vec, torch.device(device), seed)


def _follow_with_track_camera(vec: gym.vector.VectorEnv) -> None:
    """Film MuJoCo runners with the model's own "track" camera, which follows the body:
    gymnasium's default free camera stays put while a trained Walker2d walks out of view."""
    env = vec.envs[0].unwrapped
    renderer, model = getattr(env, "mujoco_renderer", None), getattr(env, "model", None)
    if renderer is None or model is None or renderer.camera_id not in (None, -1):
        return
    import mujoco

    track = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    if track >= 0:
        renderer.camera_id = track
