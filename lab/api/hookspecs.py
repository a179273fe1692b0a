"""The plugin API. A plugin is a module (or object) with functions marked `@hookimpl`.

Registration hooks receive a `register` callback rather than returning lists, so one
plugin can register any number of things and the lab records who registered what.
Lifecycle hooks observe runs; they must not change them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from lab.api.info import RunInfo

hookspec = pluggy.HookspecMarker("lab")
hookimpl = pluggy.HookimplMarker("lab")


@hookspec
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register algorithm classes: `register(MyAlgorithm)`.

    The class subclasses `lab.api.Algorithm` (or `lab.api.Agent`) and sets `name`, `kind`
    (a `lab.api.Kind`) and `Config` (a dataclass whose fields become
    `--field-name` flags); optionally `presets` {env_or_dataset: {field: value}}.
    """


@hookspec
def register_envs(register: Callable[..., None]) -> None:
    """Register environment factories: `register(env_id, factory, description="", family=None)`.

    `env_id` is an exact id (`CartPole-v1`) or a glob pattern (`ALE/*`). The factory is
    called as `factory(env_id, num_envs=, seed=, device=, evaluation=, render=, **options)`
    and returns a `lab.api.VecEnv`. It raises `LabError` for ids it cannot make.
    `family` (a `lab.api.EnvFamily`) says what the ids of one family share: a name that
    presets may be keyed by, the options its factory takes (they become run flags) and how
    its scores normalise.
    """


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Register datasets: `register(name, factory, description="")`.

    `factory(data_dir, arg, **options)` returns a `lab.api.ImageDataset` or
    `UnpairedImageDataset`; `arg` is what follows ':' in `--data NAME:ARG`.
    """


@hookspec
def register_trackers(register: Callable[..., None]) -> None:
    """Register experiment trackers: `register(name, factory, description="", options=None)`.

    `factory(run)` gets the `lab.api.RunInfo` of a starting run and returns a
    `lab.api.Tracker`, or None to stay out of this run (e.g. W&B disabled).
    `options` is a dataclass of the tracker's own settings (W&B: `wandb`, `project`): its
    fields become flags of every run and keys of config.yaml, and the factory reads the
    resolved values as `run.tracker_options[name]`. `sweep_agent(sweep, count, options)`,
    when given, runs a sweep on the tracker's server (`lab sweep SPEC --NAME-agent`); `options`
    is the tracker's options dataclass with the values given after the spec (`--project X`).
    """


@hookspec
def register_commands(register: Callable[..., None]) -> None:
    """Register `lab` subcommands: `register(name, function, description="", arguments=None)`.

    `arguments(parser)` adds the command's arguments to its argparse parser;
    `function(args, lab)` runs it with the parsed arguments and the loaded plugins
    (`lab.run.discovery.Lab`) and returns the exit code. A `LabError` it raises is shown
    as one `error:` line with exit code 2.
    """


@hookspec
def on_run_start(run: RunInfo) -> None:
    """A run is about to train (`run` is a `lab.api.RunInfo`)."""


@hookspec
def on_metrics(run: RunInfo, metrics: dict[str, float], step: int) -> None:
    """Metrics were logged at `step`."""


@hookspec
def on_run_end(run: RunInfo, summary: dict[str, Any]) -> None:
    """A run ended; `summary["status"]` says how (a `lab.api.RunStatus` value: finished,
    interrupted, pruned, diverged or failed)."""
