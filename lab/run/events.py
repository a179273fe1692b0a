"""What the run loop tells the rest of the lab: one typed event per thing that happened.

A `Session` (`lab.run.session`) trains and emits events; everything that watches a run
subscribes as an `Observer`: the trackers and the plugins' lifecycle hooks
(`lab.run.trackers`), the progress display (`lab.run.progress`), the divergence guard
(`lab.run.guard`) and a sweep's pruner (`lab.experiments`). An observer that must end the
run raises `StopRun` with the status the run ends with; the session then saves and reports
as for any other end. The loop itself knows none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.api import Pace, RunInfo, RunStatus


class StopRun(Exception):
    """Raised by an observer to end the run now, as `status` (`diverged`, `pruned`), with
    `message` printed when it ends. Raised from `evaluated`, the checkpoint taken there is
    already saved; raised from `row` or `state`, the last one saved is the one to resume."""

    def __init__(self, status: RunStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Observer:
    """Subscribes to a run's events; override the ones you need (each is a no-op here).

    Events come in order: `started`; then, while training, `stepped` after every
    `train_step`, `logged` for every scalar row (episodes, evaluations, `ctx.log`, log
    rows), `row` for the loop's own averaged rows, `state` before a state is evaluated or
    saved, `evaluated`, `media` and `checkpointed`; finally `ended`, once, however the run ends.
    """

    def started(self, run: RunInfo) -> None:
        """The run directory and config.yaml are written; training starts next."""

    def stepped(self, step: int, pace: Pace | None) -> None:
        """`train_step` advanced the run to `step` (`pace`: the algorithm's coming speed)."""

    def logged(self, metrics: dict[str, Any], step: int) -> None:
        """Scalars were logged at `step`, as the trackers received them."""

    def row(self, step: int, row: dict[str, float]) -> None:
        """A log row: `train_step`'s metrics averaged since the last row, and `perf/sps`."""

    def state(self, step: int, algorithm_state: dict[str, Any]) -> None:
        """The algorithm's state is about to be evaluated or written to a checkpoint."""

    def evaluated(self, step: int, metrics: dict[str, Any], key_metric: str) -> None:
        """An evaluation ran (and its checkpoint is saved); `key_metric` is what ranks runs."""

    def media(self, step: int, files: dict[str, Path]) -> None:
        """The algorithm wrote media files (videos, sample grids) into media/."""

    def checkpointed(self, step: int, path: Path) -> None:
        """checkpoints/latest.pt now holds the run at `step`."""

    def ended(self, status: RunStatus, summary: dict[str, Any], message: str | None) -> None:
        """The run ended as `status`; summary.json holds `summary`; `message` is what went
        wrong (a traceback, a divergence), if anything."""


class Observers(Observer):
    """Several observers as one, called in the order given."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    def add(self, observer: Observer) -> None:
        """Subscribe `observer` too (after those already there)."""
        self.observers.append(observer)

    def started(self, run: RunInfo) -> None:
        for observer in self.observers:
            observer.started(run)

    def stepped(self, step: int, pace: Pace | None) -> None:
        for observer in self.observers:
            observer.stepped(step, pace)

    def logged(self, metrics: dict[str, Any], step: int) -> None:
        for observer in self.observers:
            observer.logged(metrics, step)

    def row(self, step: int, row: dict[str, float]) -> None:
        for observer in self.observers:
            observer.row(step, row)

    def state(self, step: int, algorithm_state: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.state(step, algorithm_state)

    def evaluated(self, step: int, metrics: dict[str, Any], key_metric: str) -> None:
        for observer in self.observers:
            observer.evaluated(step, metrics, key_metric)

    def media(self, step: int, files: dict[str, Path]) -> None:
        for observer in self.observers:
            observer.media(step, files)

    def checkpointed(self, step: int, path: Path) -> None:
        for observer in self.observers:
            observer.checkpointed(step, path)

    def ended(self, status: RunStatus, summary: dict[str, Any], message: str | None) -> None:
        for observer in self.observers:
            observer.ended(status, summary, message)
