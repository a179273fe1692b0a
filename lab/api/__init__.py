"""The plugin API: everything a plugin imports from the lab, on one floor of its own.

    from lab.api import Agent, LabError, hookimpl, option

It imports nothing from the runner (`lab.run`), the experiments or the CLI: a plugin written
against it sees the services the runner hands it (`Context`) and the contracts it fulfils
(`Algorithm`, `Agent`, `VecEnv`, `Tracker`, the hooks), not how the runner is built.
"""

from lab.api.agent import Agent
from lab.api.algorithm import Algorithm, Kind, Pace, Target
from lab.api.config import check_ranges, flag, option
from lab.api.context import Context, Policy, Precision, RandomStreams
from lab.api.datasets import ImageDataset, UnpairedImageDataset, split_validation
from lab.api.envs import EnvFamily, Episode, TrainingEnv, VecEnv
from lab.api.errors import LabError
from lab.api.hookspecs import hookimpl, hookspec
from lab.api.info import RunInfo, RunStatus
from lab.api.tracking import Tracker, jsonable

__all__ = [
    "Agent", "Algorithm", "Context", "EnvFamily", "Episode", "ImageDataset", "Kind", "LabError", "Pace", "Policy",
    "Precision", "RandomStreams", "RunInfo", "RunStatus", "Target", "Tracker", "TrainingEnv", "UnpairedImageDataset",
    "VecEnv", "check_ranges", "flag", "hookimpl", "hookspec", "jsonable", "option", "split_validation",
]
