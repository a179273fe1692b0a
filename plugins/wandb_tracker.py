"""Weights & Biases tracker: every run can land in W&B, offline by default.

Conventions (ARCHITECTURE.md "W&B conventions"): project from the run, group = experiment
(runs differing only by seed), job_type = algorithm kind, tags = [algo, env or data],
config = the full resolved config, id = run directory name, files under `<run_dir>/wandb/`.
Every history row carries `global_step`, and every metric is plotted against it, so the
W&B history matches metrics.jsonl row for row (media add rows of their own).

`wandb` is imported only when a run actually uses it: importing it costs about a second
(bench/wandb_startup.py measures start-up against plain `wandb.init`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lab.errors import LabError
from lab.hookspecs import hookimpl
from lab.run import RunInfo
from lab.tracking import Tracker

if TYPE_CHECKING:
    import wandb

MODES = ("online", "offline", "disabled")
# What wandb accepts in WANDB_MODE; anything else makes every wandb.init fail validation.
WANDB_ENV_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")
STEP_METRIC = "global_step"
# W&B marks any non-zero exit code as failed; 255 is what wandb itself reports for a
# KeyboardInterrupt, so an interrupted run looks the same as one wandb saw interrupted.
EXIT_CODES = {"finished": 0, "interrupted": 255, "failed": 1}
_ARTIFACT_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def wandb_settings() -> wandb.Settings:
    """Quiet, fast settings for every lab run.

    console="off": the lab prints its own progress; W&B capturing it only duplicates
    output (and spams test logs). silent: no banner or sync hints on the console.
    x_save_requirements=False: `pip freeze` is most of W&B's per-run start-up cost and
    config.yaml already records the versions that matter (measured: a warm `wandb.init`
    drops from ~0.14 s to ~0.04 s). System metrics, git and host metadata stay on: they
    are what W&B adds over metrics.jsonl, and cost ~0.01-0.04 s each.
    """
    import wandb

    return wandb.Settings(
        console="off",
        silent=True,
        x_save_requirements=False,
    )


def _value(value: Any) -> Any:
    """Plain Python numbers for W&B (tensors and numpy scalars have `.item()`)."""
    return value.item() if hasattr(value, "item") else value


class WandbTracker(Tracker):
    """Logs scalars, images, videos and (on request) checkpoints to one W&B run."""

    def __init__(self, info: RunInfo) -> None:
        import wandb

        self.info = info
        self._wandb = wandb
        info.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=info.project,
            group=info.experiment,
            job_type=info.kind,
            tags=info.tags,
            config=info.config,
            id=info.name,
            name=info.name,
            dir=str(info.run_dir),
            mode=info.wandb_mode,
            resume="allow" if info.resumed else None,
            reinit="create_new",
            settings=wandb_settings(),
        )
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)
        self._finished = False

    def _log_row(self, row: dict[str, Any], step: int) -> None:
        self.run.log({STEP_METRIC: int(step), **row})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._log_row({k: _value(v) for k, v in metrics.items()}, step)

    def log_image(self, key: str, path: Path, step: int) -> None:
        self._log_row({key: self._wandb.Image(str(path))}, step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        self._log_row({key: self._wandb.Video(str(path), format="mp4")}, step)

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        """Version a file (a checkpoint) as artifact `name`, only when the user asked for it;
        each call adds a version and moves the `latest` alias to it."""
        if not self.info.wandb_artifacts:
            return
        artifact = self._wandb.Artifact(_ARTIFACT_NAME.sub("-", name).strip("-.") or "file", type=type)
        artifact.add_file(str(path), name=Path(path).name)
        self.run.log_artifact(artifact, aliases=["latest"])

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary and close the run with an exit code that says how it ended.

        Safe to call twice (a runner's error path may call it after a normal finish).
        """
        if self._finished:
            return
        self._finished = True
        status = str(summary.get("status", "finished"))
        try:
            for key, value in summary.items():
                self.run.summary[key] = _value(value)
        finally:
            self.run.finish(exit_code=EXIT_CODES.get(status, 1))


def make_tracker(info: RunInfo) -> Tracker | None:
    """The `register_trackers` factory: None when W&B is disabled for this run."""
    if info.wandb_mode not in MODES:
        raise LabError(
            f"unknown W&B mode '{info.wandb_mode}'; use --wandb {' | '.join(MODES)}"
        )
    if info.wandb_mode == "disabled":
        return None
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode is not None and env_mode not in WANDB_ENV_MODES:
        raise LabError(
            f"WANDB_MODE={env_mode!r} is not a W&B mode; unset it or set it to one of "
            f"{', '.join(MODES)} (the --wandb flag chooses the mode for lab runs)"
        )
    return WandbTracker(info)


@hookimpl
def register_trackers(register: Callable[..., None]) -> None:
    register("wandb", make_tracker, description="Weights & Biases: offline unless logged in (--wandb)")
