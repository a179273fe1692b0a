"""metrics.jsonl, the run directory's own record, written through the same tracker hook as W&B."""

from __future__ import annotations

import json
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from lab.api import RunInfo, Tracker, hookimpl, jsonable
from lab.files import FileFault, writing


class JsonlTracker(Tracker):
    """Appends `{"global_step", "time", **metrics}` lines to metrics.jsonl (the run contract)."""

    def __init__(self, path: Path, start_time: float) -> None:
        self.path = path
        self.start_time = start_time
        with self._writing():
            self._file = open(path, "a", buffering=1, encoding="utf-8")

    def _writing(self) -> AbstractContextManager[None]:
        """A refused write of metrics.jsonl is one line (`lab.files`), never a traceback."""
        return writing(self.path, "write metrics to", "move the run folder where there is room")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """One line: `global_step`, `time` (seconds since the run started) and the metrics."""
        row = {"global_step": int(step), "time": round(time.time() - self.start_time, 3)}
        row.update({k: jsonable(v) for k, v in metrics.items()})
        with self._writing():
            self._file.write(json.dumps(row) + "\n")

    def finish(self, summary: dict[str, Any]) -> None:
        """Close metrics.jsonl; rows a full disk kept out were reported when they were logged, so
        a close that cannot write them either is a warning (it runs as the run ends, failed or not)."""
        try:
            with self._writing():
                self._file.close()
        except FileFault as exc:
            print(f"warning: {exc}", file=sys.stderr)


def _factory(run: RunInfo) -> JsonlTracker | None:
    if run.purpose != "train":  # `lab eval` writes eval.json instead
        return None
    return JsonlTracker(run.run_dir / "metrics.jsonl", start_time=time.time() - run.time_offset)


@hookimpl
def register_trackers(register: Any) -> None:
    register("jsonl", _factory, description="metrics.jsonl in the run directory")
