"""The plugin API: everything a plugin imports from the lab, on one floor of its own.

    from lab.api import Agent, LabError, hookimpl, option

It imports nothing from the runner (`lab.run`), the experiments or the CLI: a plugin written
against it sees the services the runner hands it (`Context`) and the contracts it fulfils
(`Algorithm`, `Agent`, `VecEnv`, `Tracker`, the hooks), not how the runner is built.

The names load on first use (PEP 562): `lab.api.errors` and `lab.api.config` need neither
torch nor gymnasium, so the CLI reads its flags and installs its Ctrl-C handler before the
heavy imports begin, and `lab --help` answers at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.api.agent import Agent
    from lab.api.algorithm import Algorithm, Kind, Pace, Target
    from lab.api.config import check_ranges, flag, option
    from lab.api.context import Context, Policy, Precision, RandomStreams, StopRequested
    from lab.api.datasets import ImageDataset, UnpairedImageDataset, split_validation
    from lab.api.envs import EnvFamily, Episode, TrainingEnv, VecEnv
    from lab.api.errors import LabError
    from lab.api.hookspecs import hookimpl, hookspec
    from lab.api.info import RunInfo, RunStatus
    from lab.api.tracking import Tracker, jsonable

_HOME = {
    "Agent": "agent", "Algorithm": "algorithm", "Kind": "algorithm", "Pace": "algorithm", "Target": "algorithm",
    "check_ranges": "config", "flag": "config", "option": "config", "Context": "context", "Policy": "context",
    "Precision": "context", "RandomStreams": "context", "StopRequested": "context", "ImageDataset": "datasets",
    "UnpairedImageDataset": "datasets", "split_validation": "datasets", "EnvFamily": "envs", "Episode": "envs",
    "TrainingEnv": "envs", "VecEnv": "envs", "LabError": "errors", "hookimpl": "hookspecs", "hookspec": "hookspecs",
    "RunInfo": "info", "RunStatus": "info", "Tracker": "tracking", "jsonable": "tracking",
}
# written out, not sorted(_HOME): type checkers read a literal __all__ as the names exported
__all__ = [
    "Agent", "Algorithm", "Context", "EnvFamily", "Episode", "ImageDataset", "Kind", "LabError", "Pace", "Policy",
    "Precision", "RandomStreams", "RunInfo", "RunStatus", "StopRequested", "Target", "Tracker", "TrainingEnv",
    "UnpairedImageDataset", "VecEnv", "check_ranges", "flag", "hookimpl", "hookspec", "jsonable", "option",
    "split_validation",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'lab.api' has no attribute '{name}'")
    return getattr(importlib.import_module(f"lab.api.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return __all__
