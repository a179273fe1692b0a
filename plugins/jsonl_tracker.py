"""metrics.jsonl, the run directory's own record, written through the same tracker hook as W&B."""

from __future__ import annotations

import time

from lab.hookspecs import hookimpl
from lab.run.info import RunInfo
from lab.tracking import JsonlTracker


def _factory(run: RunInfo) -> JsonlTracker | None:
    if run.purpose != "train":  # `lab eval` writes eval.json instead
        return None
    return JsonlTracker(run.run_dir / "metrics.jsonl", start_time=time.time() - run.time_offset)


@hookimpl
def register_trackers(register) -> None:
    register("jsonl", _factory, description="metrics.jsonl in the run directory")
