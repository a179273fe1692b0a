"""The settings every run has (`RunConfig`), and what a plugin's settings class may hold.

Registration checks a plugin's `Config` (and an env family's or tracker's options) against
both: only types the CLI can parse, and no field that clashes with a run setting.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lab.api import check_ranges, option
from lab.files import name_max


@dataclass
class RunConfig:
    """Settings every run has, whatever the algorithm."""

    env: str | None = option(None, "environment id (agents), e.g. ALE/Breakout-v5")
    data: str | None = option(None, "dataset NAME[:ARG] (supervised, generators)")
    preset: str | None = option(None, "the algorithm's preset of this name (e.g. atari100k) instead of the one "
                                      "--env/--data matches")
    steps: int | None = option(None, "agent steps summed over all envs (or optimizer steps)")
    epochs: int | None = option(None, "passes over the dataset (dataset algorithms)")
    horizon: int | None = option(None, "steps the schedules (learning rate, exploration) anneal over; default: the "
                                       "budget (CleanRL's Atari curves anneal over 10M whatever step they are read at)")
    seed: int = option(1, "seed for python, numpy, torch and the envs")
    device: Literal["auto", "cpu", "cuda", "mps"] = option("auto", "auto picks cuda, mps, cpu")
    name: str | None = option(None, "run directory name (default: algo-env-seed-time)")
    runs_dir: str | None = option(None, "output root (default: $LAB_RUNS_DIR or ./runs)")
    data_dir: str | None = option(None, "dataset root (default: $LAB_DATA_DIR or ./data)")
    experiment: str | None = option(None, "runs that differ only by seed share it (W&B group; default: algo-env)")
    log_interval: int | None = option(None, "steps between metric rows")
    eval_interval: int | None = option(None, "steps between evaluations")
    eval_episodes: int = option(10, "episodes per evaluation")
    checkpoint_interval: int | None = option(None, "steps between checkpoints")
    video: bool = option(True, "record media (video, sample grids) at the end")
    compile: Literal["auto", "true", "false"] = option(
        "auto", "torch.compile the hot functions: auto when the run repays it")
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "bf16: the plugin's network passes under bfloat16 autocast, weights kept in fp32 (about 2x on CPUs "
                "with AMX and on Ampere or newer GPUs, slower on CPUs without them); auto: bf16 there, for plugins "
                "that support it")
    threads: int | None = option(None, "torch CPU threads (default: the algorithm's choice)")
    trackers: tuple[str, ...] | None = option(
        None, "trackers to use, e.g. jsonl,wandb,tensorboard (default: every one installed; none: only "
              "jsonl, the run's metrics.jsonl, which always runs)")

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("steps", "epochs", "horizon", "log_interval", "eval_interval", "checkpoint_interval",
                                         "threads", "eval_episodes"))
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be between 0 and 2**32-1, got {self.seed}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either --steps or --epochs, not both")
        if self.name is not None and not _valid_name(self.name):
            raise ValueError(f"--name '{self.name}' may only use letters, digits, '.', '_' and '-'")
        if self.name is not None:
            size, limit = len(self.name.encode()), name_max(self.resolved_runs_dir)
            if size > limit:
                raise ValueError(f"--name is {size} bytes long, and names on the file system of "
                                 f"'{self.resolved_runs_dir}' hold at most {limit}; choose a shorter --name")
        if self.trackers is not None:
            given = self.trackers.split(",") if isinstance(self.trackers, str) else self.trackers
            names = [str(n).strip() for n in given]
            if not all(names):
                raise ValueError(f"--trackers has an empty name in {','.join(names)!r}; "
                                 "give names separated by commas, e.g. --trackers jsonl,tensorboard")
            self.trackers = tuple(dict.fromkeys(names))  # keeps the order, drops repeats

    @property
    def resolved_runs_dir(self) -> Path:
        return Path(self.runs_dir or os.environ.get("LAB_RUNS_DIR") or "runs")

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir or os.environ.get("LAB_DATA_DIR") or "data")


RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def _valid_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and all(c.isalnum() or c in "._-" for c in name)


def check_config_class(config_cls: type, owner: str) -> None:
    """Reject at registration time settings classes the CLI could not handle."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{owner}: the settings class must be a dataclass")
    clash = RUN_FIELDS & {f.name for f in dataclasses.fields(config_cls)}
    if clash:
        raise TypeError(f"{owner}: fields clash with run settings: {sorted(clash)}")
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        _check_type(hints[f.name], f"{config_cls.__name__}.{f.name}")


def split_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _check_type(tp: Any, where: str) -> None:
    base, _ = split_optional(tp)
    origin = typing.get_origin(base)
    if base in (int, float, str, bool) or origin is Literal:
        return
    if origin in (tuple, list) and all(a in (int, float, str, Ellipsis) for a in typing.get_args(base)):
        return
    raise TypeError(f"{where}: unsupported config type {tp!r} (use int, float, str, bool, Literal, tuples)")
