"""Weights & Biases tracker: every run can land in W&B, offline by default.

Conventions (the table in docs/tracking.md: Weights & Biases): project from the run,
group = experiment (runs differing only by seed), job_type = algorithm kind, tags = [algo,
env or data], config = the full resolved config, id = run directory name, files under
`<run_dir>/wandb/`. Every history row carries `global_step`, and every metric is plotted
against it, so the W&B history matches metrics.jsonl row for row (media add rows of their own).

One run, however often it is interrupted and resumed (docs/tracking.md: Weights & Biases,
"Offline runs, resume and sync"):

- Every session of a run (`lab train`, each `lab resume`, each `lab eval`) writes its own
  offline folder under the same run id; `wandb sync` replays them, oldest first, into one
  W&B run, and W&B drops a history row whose `_step` is not above the run's highest. An
  offline session cannot ask the server where the run stopped, so wandb would restart
  `_step` at 0 and a sync would drop every resumed row. The tracker numbers rows itself
  (`run.log(..., step=n)`): n continues after the highest `_step` in the run's earlier
  files, so every session's rows land, `lab eval` results included.
- A session stopped without a checkpoint at its last step (a second Ctrl-C, a crash, a
  killed job) logged rows past the checkpoint the next session resumes from; the runner
  cuts them from metrics.jsonl and the next session logs those steps again. The resumed
  tracker removes them from the earlier sessions' offline files too (the ones not synced
  yet), so the synced history holds each metrics.jsonl row once, in step order.
- A session killed outright (kill -9) loses the rows wandb-core had not written to disk
  yet (it buffers them), while metrics.jsonl has them: the next session of the run
  (resume or eval) logs the metrics.jsonl rows that no earlier file holds before its own.
- Evaluation and validation metrics and the training return keep their min and max in
  the summary as well as the last value (`eval/return_mean.max` ...), over the whole run:
  wandb computes those per session, so the tracker carries them over from earlier files.

`wandb` is imported only when a run actually uses it: importing it costs about a second
(bench/wandb_startup.py measures start-up against plain `wandb.init`).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lab.api import LabError, RunInfo, RunStatus, Tracker, hookimpl, option
from lab.plugins.wandb_tracker.records import (
    WandbFileError,
    drop_history_after,
    find_wandb_files,
    has_exit_record,
    is_offline,
    is_synced,
    read_history,
    session_start,
    sync_rule,
)
from lab.run.rundir import read_metrics

if TYPE_CHECKING:
    import wandb

MODES = ("online", "offline", "disabled")


@dataclass
class WandbOptions:
    """The W&B tracker's settings: flags of every run (`--wandb offline`) and keys of config.yaml's `run:`."""

    wandb: Literal["online", "offline", "disabled"] | None = option(
        None, "W&B mode (default: online when logged in, else offline)")
    project: str = option("arcade-lab", "W&B project")
    wandb_artifacts: bool = option(False, "upload checkpoints as W&B artifacts")


def wandb_mode(requested: str | None) -> str:
    """online when logged in (API key in the environment or ~/.netrc), else offline."""
    if requested is not None:
        return requested
    if os.environ.get("WANDB_MODE") in MODES:
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    import netrc

    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        auth = None
    return "online" if auth else "offline"
# What wandb accepts in WANDB_MODE; anything else makes every wandb.init fail validation.
WANDB_ENV_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")
STEP_METRIC = "global_step"
# W&B marks any non-zero exit code as failed; 255 is what wandb itself reports for a
# KeyboardInterrupt, so an interrupted run looks the same as one wandb saw interrupted.
# W&B's run state follows the exit code: 0 finished, 255 (its convention) crashed/stopped, else failed.
# A pruned trial ended as its sweep asked (the process exits 0); a diverged run failed.
EXIT_CODES = {RunStatus.FINISHED: 0, RunStatus.PRUNED: 0, RunStatus.INTERRUPTED: 255, RunStatus.FAILED: 1,
              RunStatus.DIVERGED: 1}
_ARTIFACT_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# Metrics whose W&B summary keeps {"min", "max", "last"} rather than the last value alone:
# what runs are ranked by (docs/tracking.md: Weights & Biases, the summary).
EXTREMES_PREFIXES = ("eval/", "val/")
EXTREMES_KEYS = ("train/episode_return",)
EXTREMES_SUMMARY = "min,max,last"


def keeps_extremes(key: str) -> bool:
    return key.startswith(EXTREMES_PREFIXES) or key in EXTREMES_KEYS


def _number(value: Any) -> float | None:
    """A finite int/float as a float, else None (bools, media, NaN stay out of min/max)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def resume_step(info: RunInfo) -> int | None:
    """The step a resumed training session starts from: the checkpoint's `global_step`
    (`RunInfo.start_step`), else the last row of metrics.jsonl, which the runner has cut
    back to the checkpoint by then; None without either."""
    start = getattr(info, "start_step", 0)
    if start:
        return int(start)
    if not (info.run_dir / "metrics.jsonl").is_file():
        return None
    return int(max((row.get(STEP_METRIC, 0) for row in read_metrics(info.run_dir)), default=0))


def _signature(row: dict[str, Any]) -> str:
    """A row's content as metrics.jsonl and the W&B history can both give it: no wall-clock
    or W&B bookkeeping fields, numbers as floats (W&B reads 2.0 back as 2), non-finite
    numbers as None (metrics.jsonl writes null)."""

    def plain(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        return float(value) if math.isfinite(value) else None

    return json.dumps({k: plain(v) for k, v in row.items() if k != "time" and not k.startswith("_")},
                      sort_keys=True, default=str)


def missing_rows(expected: list[dict[str, Any]], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `expected` (metrics.jsonl, in order) that `history` (W&B rows, in order)
    does not hold, matching each expected row to the first equal history row after the
    previous match; history rows of their own (media, `lab eval`) are passed over."""
    positions: dict[str, list[int]] = {}
    for index, row in enumerate(history):
        if not any(isinstance(v, dict) for v in row.values()):  # media rows are not in metrics.jsonl
            positions.setdefault(_signature(row), []).append(index)
    missing, after = [], -1
    for row in expected:
        found = positions.get(_signature(row), [])
        at = bisect.bisect_right(found, after)
        if at < len(found):
            after = found[at]
        else:
            missing.append(row)
    return missing


def _settle(path: Path, timeout: float = 2.0) -> None:
    """Wait until nothing writes to `path` any more: wandb-core closes a finished session's
    file shortly after `run.finish()` returns (an earlier session in this process)."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline and path.stat().st_size != size:
        size = path.stat().st_size
        time.sleep(0.2)


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

    def __init__(self, info: RunInfo, options: WandbOptions, mode: str) -> None:
        import wandb

        self.info = info
        self.options = options
        self.mode = mode
        self._wandb = wandb
        info.run_dir.mkdir(parents=True, exist_ok=True)
        # key -> [min, max, last] over the whole run, earlier sessions included
        self._extremes: dict[str, list[float]] = {}
        self._defined: set[str] = set()
        self._backlog: list[dict[str, Any]] = []
        self._step = self._continue_history() if info.resumed else 0
        self.run = wandb.init(
            project=options.project,
            group=info.experiment,
            job_type=info.kind,
            tags=info.tags,
            config=info.config,
            # under a W&B sweep agent the run id is the agent's (WANDB_RUN_ID), so the trial joins the sweep
            id=None if os.environ.get("WANDB_SWEEP_ID") else info.name,
            name=info.name,
            dir=str(info.run_dir),
            mode=mode,
            resume="allow" if info.resumed else None,
            reinit="create_new",
            settings=wandb_settings(),
        )
        if info.resumed and mode == "online":
            # an online resume knows the server's next step: never log below it (wandb would
            # ignore the row), should the run's earlier local folders be gone
            self._step = max(self._step, int(self.run.step))
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)
        for key in self._extremes:
            self._define(key)
        self._finished = False
        for row in self._backlog:
            self._log_row({k: v for k, v in row.items() if k not in (STEP_METRIC, "time")}, row[STEP_METRIC])

    def _continue_history(self) -> int:
        """Make this session's rows follow the run's earlier sessions; returns the `_step`
        of this session's first row.

        A training session resumes from a checkpoint: rows the earlier sessions logged past
        it are removed from their offline files (synced files and online sessions are on
        the server already and stay as they are). metrics.jsonl rows that no earlier file
        holds (a killed session's last ones) become this session's first rows. `_step`
        continues after the highest step any earlier file used, so no row of this session
        is below one W&B already holds.
        """
        files = find_wandb_files(self.info.run_dir)
        for path in files:
            if is_offline(path) and not is_synced(path) and session_start(path) is None:
                # A session killed (kill -9) before wandb-core wrote its run record leaves a
                # file that `wandb sync` cannot read (and stops at); it holds no rows
                # (metrics.jsonl has them: see below), so mark it for sync to pass over.
                path.with_suffix(".wandb.synced").touch()
        histories = [read_history(path) for path in files]
        steps = [row["_step"] for rows in histories for row in rows if isinstance(row.get("_step"), int)]
        cut = resume_step(self.info) if self.info.purpose == "train" else None
        for i, path in enumerate(files):
            if cut is None or not is_offline(path) or is_synced(path):
                continue
            if any(isinstance(row.get(STEP_METRIC), (int, float)) and row[STEP_METRIC] > cut
                   for row in histories[i]):
                _settle(path)
                drop_history_after(path, cut, STEP_METRIC)
                histories[i] = read_history(path)
        history = sync_rule(histories)
        for row in history:
            self._note_extremes(row)
        self._backlog = missing_rows(read_metrics(self.info.run_dir), history)
        return max(steps) + 1 if steps else 0

    def _define(self, key: str) -> None:
        self.run.define_metric(key, step_metric=STEP_METRIC, summary=EXTREMES_SUMMARY)
        self._defined.add(key)

    def _note_extremes(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            number = _number(value)
            if number is None or not keeps_extremes(key):
                continue
            seen = self._extremes.get(key)
            if seen is None:
                self._extremes[key] = [number, number, number]
            else:
                seen[:] = [min(seen[0], number), max(seen[1], number), number]

    def _log_row(self, row: dict[str, Any], step: int) -> None:
        self._note_extremes(row)
        for key in self._extremes.keys() - self._defined:
            self._define(key)  # before the first row holding it, so wandb aggregates it too
        # An explicit, run-wide row number (see the module docstring); commit=True hands the
        # row to wandb-core now rather than with the next row.
        self.run.log({STEP_METRIC: int(step), **row}, step=self._step, commit=True)
        self._step += 1

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._log_row({k: _value(v) for k, v in metrics.items()}, step)

    def log_image(self, key: str, path: Path, step: int) -> None:
        self._log_row({key: self._wandb.Image(str(path))}, step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        self._log_row({key: self._wandb.Video(str(path), format="mp4")}, step)

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        """Version a file (a checkpoint) as artifact `name`, only when the user asked for it;
        each call adds a version and moves the `latest` alias to it."""
        if not self.options.wandb_artifacts:
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
        status = RunStatus.read(summary, missing=RunStatus.FINISHED)  # `lab eval` of a run without one
        try:
            for key, value in summary.items():
                self.run.summary[key] = _value(value)
            # wandb's own min/max cover this session's rows; these cover the whole run
            for key, (low, high, last) in self._extremes.items():
                final = _number(_value(summary[key])) if key in summary else last
                self.run.summary[key] = {"min": low, "max": high, "last": last if final is None else final}
        finally:
            self.run.finish(exit_code=EXIT_CODES[status])
            self._wait_written()

    def _wait_written(self, timeout: float = 10.0) -> None:
        """Wait (a few ms) until wandb-core has written this session's file to its end: it
        does so after `run.finish()` returns, and a next session of the run in this process
        (a resume, `lab eval`) reads it."""
        path = Path(getattr(self.run.settings, "sync_file", "") or "")
        if not path.name.endswith(".wandb"):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if has_exit_record(path):
                    return
            except (OSError, WandbFileError):
                pass
            time.sleep(0.01)


def make_tracker(info: RunInfo) -> Tracker | None:
    """The `register_trackers` factory: None when W&B is disabled for this run."""
    options = info.tracker_options.get("wandb") or WandbOptions()
    mode = wandb_mode(options.wandb)
    if mode not in MODES:
        raise LabError(f"unknown W&B mode '{mode}'; use --wandb {' | '.join(MODES)}")
    if mode == "disabled":
        return None
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode is not None and env_mode not in WANDB_ENV_MODES:
        raise LabError(
            f"WANDB_MODE={env_mode!r} is not a W&B mode; unset it or set it to one of "
            f"{', '.join(MODES)} (the --wandb flag chooses the mode for lab runs)"
        )
    tracker = WandbTracker(info, options, mode)
    if mode == "offline":
        print(f"W&B is offline: upload later with "
              f"`wandb sync --id {info.name} {info.run_dir / 'wandb'}/offline-run-*`", file=sys.stderr)
    return tracker


def _sweep_agent(sweep: Any, count: int | None, options: WandbOptions) -> int:
    from lab.plugins.wandb_tracker.sweep_agent import run_wandb_agent

    return run_wandb_agent(sweep, count, options.project)


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    from lab.plugins.wandb_tracker import workspace

    register("wandb-workspace", workspace.command, description="a W&B workspace laid out for the lab's runs",
             arguments=workspace.arguments)


@hookimpl
def register_trackers(register: Callable[..., None]) -> None:
    register("wandb", make_tracker, description="Weights & Biases: offline unless logged in (--wandb)",
             options=WandbOptions, sweep_agent=_sweep_agent)
