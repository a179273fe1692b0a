"""Built-in env factories: the four classic-control tasks and every ALE Atari game."""

from __future__ import annotations

from typing import Callable

from lab.envs.atari import make_atari
from lab.envs.classic import CLASSIC_IDS, make_classic
from lab.hookspecs import hookimpl


@hookimpl
def register_envs(register: Callable[..., None]) -> None:
    for env_id in CLASSIC_IDS:
        register(env_id, make_classic, description="gymnasium classic control")
    register(
        "ALE/*-v5",
        make_atari,
        description="Atari (ale-py vector env, DeepMind preprocessing, sticky actions 0.25)",
    )
    register(
        "*NoFrameskip-v4",
        make_atari,
        description="Atari (ale-py vector env, DeepMind preprocessing, no sticky actions when training)",
    )
