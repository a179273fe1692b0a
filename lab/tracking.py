"""Experiment trackers: where metrics, images and videos go.

`metrics.jsonl` is written by the built-in `jsonl` tracker; W&B is another tracker
plugin. Every tracker registered through `register_trackers` sees every run and decides
in its factory whether to take part.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any


class Tracker:
    """Base class: override what your backend supports; the rest are no-ops."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at `step` (the run's global_step)."""

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG already written under the run's media/ folder."""

    def log_video(self, key: str, path: Path, step: int) -> None:
        """An MP4 already written under the run's media/ folder."""

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        """A file to version (checkpoints when the user asks for artifacts)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended; `summary["status"]` says how."""


class MultiTracker(Tracker):
    """Fans every call out to the trackers taking part in a run.

    `guard` (the runner passes its signal handling's critical section) surrounds every
    call, so a second Ctrl-C never lands inside a tracker's own code (a W&B message half
    sent): it takes effect when the call has returned.
    """

    def __init__(self, trackers: list[Tracker], on_log: Any = None,
                 guard: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.trackers = trackers
        self._on_log = on_log
        self._guard = guard

    def _each(self, call: Callable[[Tracker], None]) -> None:
        with self._guard():
            for tracker in self.trackers:
                call(tracker)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Scalars to every tracker, then to the console's callback."""
        self._each(lambda tracker: tracker.log(metrics, step))
        if self._on_log is not None:
            self._on_log(metrics, step)

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG to every tracker."""
        self._each(lambda tracker: tracker.log_image(key, path, step))

    def log_video(self, key: str, path: Path, step: int) -> None:
        """An MP4 to every tracker."""
        self._each(lambda tracker: tracker.log_video(key, path, step))

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        """A file to version, to every tracker."""
        self._each(lambda tracker: tracker.log_artifact(path, name, type))

    def finish(self, summary: dict[str, Any]) -> None:
        """End every tracker's run."""
        self._each(lambda tracker: tracker.finish(summary))


def jsonable(value: Any) -> Any:
    """Plain floats/ints for JSON; NaN and inf become None so every line stays valid JSON."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlTracker(Tracker):
    """Appends `{"global_step", "time", **metrics}` lines to metrics.jsonl (the run contract)."""

    def __init__(self, path: Path, start_time: float) -> None:
        self.path = path
        self.start_time = start_time
        self._file = open(path, "a", buffering=1, encoding="utf-8")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """One line: `global_step`, `time` (seconds since the run started) and the metrics."""
        import time

        row = {"global_step": int(step), "time": round(time.time() - self.start_time, 3)}
        row.update({k: jsonable(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")

    def finish(self, summary: dict[str, Any]) -> None:
        """Close metrics.jsonl."""
        self._file.close()
