"""Built-in env factories: every ALE Atari game (DeepMind preprocessing) and, for any
other id registered with gymnasium (classic control, Box2D, MuJoCo, ...), the generic one,
whose `--env-backend` may hand it to EnvPool."""

from __future__ import annotations

from collections.abc import Callable

from lab.api import hookimpl
from lab.envs.atari import ATARI, make_atari
from lab.envs.backends import GYMNASIUM
from lab.envs.gymnasium_env import CLASSIC_IDS, make_gymnasium


@hookimpl
def register_envs(register: Callable[..., None]) -> None:
    for env_id in CLASSIC_IDS:
        register(env_id, make_gymnasium, description="gymnasium classic control", family=GYMNASIUM)
    register(
        "ALE/*-v5",
        make_atari,
        description="Atari (ale-py vector env, DeepMind preprocessing, sticky actions 0.25)",
        family=ATARI,
    )
    register(
        "*NoFrameskip-v4",
        make_atari,
        description="Atari (ale-py vector env, DeepMind preprocessing, no sticky actions when training)",
        family=ATARI,
    )
    register(
        "*",
        make_gymnasium,
        description="any other gymnasium id: Box2D with arcade-lab[box2d], MuJoCo with arcade-lab[mujoco]",
        family=GYMNASIUM,
    )
