"""A run's trackers: which start, one object that fans out to them, and the observer that
feeds them (and the plugins' lifecycle hooks) the run's events."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from lab import distributed
from lab.api import Episode, LabError, RunInfo, RunStatus, Tracker
from lab.api.errors import one_line, unknown
from lab.run.discovery import Lab
from lab.run.events import Observer

# metrics.jsonl is the run directory's own record (`lab runs`, `lab compare` and resume read it):
# it is written whatever --trackers names.
ALWAYS_TRACKERS = ("jsonl",)


def selected_trackers(lab: Lab, names: tuple[str, ...] | None) -> list[str]:
    """The registered trackers a run starts, in registration order: every one when `names` is
    None (each factory still decides, e.g. W&B disabled), else the named ones plus jsonl.
    An unknown name is a LabError listing the registered trackers."""
    registered = lab.registry.trackers
    if names is None:
        return list(registered)
    for name in names:
        if name not in registered:
            raise unknown("tracker", name, registered,
                          f"--trackers takes names from: {', '.join(registered)} (`lab plugins` lists them)")
    return [name for name in registered if name in names or name in ALWAYS_TRACKERS]


class MultiTracker(Tracker):
    """Fans every call out to the trackers taking part in a run.

    `guard` (the runner passes its signal handling's critical section) surrounds every
    call, so a second Ctrl-C never lands inside a tracker's own code (a W&B message half
    sent): it takes effect when the call has returned.
    """

    def __init__(self, trackers: list[Tracker], on_log: Callable[[dict[str, Any], int], None] | None = None,
                 guard: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.trackers = trackers
        self._on_log = on_log
        self._guard = guard

    def _each(self, call: Callable[[Tracker], None]) -> None:
        with self._guard():
            for tracker in self.trackers:
                call(tracker)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Scalars to every tracker, then to the runner's callback."""
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

    def start(self, lab: Lab, run: RunInfo) -> None:
        """Start the trackers `run.trackers` selects; one that fails to start (other than with
        a LabError, the user's to fix) is left out with a warning."""
        for name in selected_trackers(lab, run.trackers):
            registration = lab.registry.trackers[name]
            try:
                tracker = registration.obj(run)
            except LabError:
                raise
            except Exception as exc:
                print("warning: " + one_line(f"tracker '{name}' could not start ({type(exc).__name__}: {exc}); "
                                             "continuing without it"), file=sys.stderr)
                continue
            if tracker is not None:
                self.trackers.append(tracker)


class EpisodeLog:
    """Training episodes to the trackers (`train/episode_return`, `train/episode_length`), each
    at the step it finished. Under torchrun every rank's episodes are gathered and logged by
    rank 0 at the next row or checkpoint (`flush`, which all ranks call together)."""

    def __init__(self, tracker: Tracker, world_size: int) -> None:
        self.tracker = tracker
        self.world_size = world_size
        self.waiting: list[tuple[int, Episode]] = []

    def add(self, step: int, episodes: list[Episode]) -> None:
        for episode in episodes:
            if self.world_size > 1:
                self.waiting.append((step, episode))
            else:
                self.log(step, episode)

    def flush(self) -> None:
        if self.world_size == 1:
            return
        finished = [e for part in distributed.all_gather_object(self.waiting) for e in part]
        self.waiting = []
        for step, episode in sorted(finished, key=lambda item: item[0]):
            self.log(step, episode)

    def log(self, step: int, episode: Episode) -> None:
        self.tracker.log({"train/episode_return": episode.episode_return, "train/episode_length": episode.length}, step)


class Tracking(Observer):
    """The run's events to its trackers (media, checkpoints as artifacts, the end) and to the
    plugins' lifecycle hooks (`on_run_start`, `on_metrics`, `on_run_end`)."""

    def __init__(self, tracker: MultiTracker, lab: Lab, run: RunInfo) -> None:
        self.tracker = tracker
        self.hook = lab.pm.hook
        self.run = run

    def started(self, run: RunInfo) -> None:
        self.hook.on_run_start(run=run)

    def logged(self, metrics: dict[str, Any], step: int) -> None:
        self.hook.on_metrics(run=self.run, metrics=metrics, step=step)

    def media(self, step: int, files: dict[str, Path]) -> None:
        for key, path in files.items():
            log = self.tracker.log_video if path.suffix.lower() == ".mp4" else self.tracker.log_image
            log(key, path, step)

    def checkpointed(self, step: int, path: Path) -> None:
        self.tracker.log_artifact(path, f"{self.run.name}-checkpoint", "model")

    def ended(self, status: RunStatus, summary: dict[str, Any], message: str | None) -> None:
        self.tracker.finish(summary)
        self.hook.on_run_end(run=self.run, summary=summary)
