"""`csv`: a tracker that writes every logged scalar as a `step,metric,value` row.

A complete tracker plugin with a setting of its own: `--csv-file NAME` (or `csv_file:` in
a config file's `run:` section) names the file in the run folder. Like every installed
tracker it takes part in every run unless `--trackers` leaves it out.

    lab train ppo --env CartPole-v1 --csv-file curves.csv --plugins-dir docs/examples
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.api import Tracker, hookimpl, option


@dataclass
class CSVOptions:
    csv_file: str = option("metrics.csv", "file in the run folder the csv tracker writes")

    def __post_init__(self) -> None:
        if Path(self.csv_file).name != self.csv_file or not self.csv_file.endswith(".csv"):
            raise ValueError(f"--csv-file takes a file name ending in .csv, got '{self.csv_file}'")


class CSVTracker(Tracker):
    """Appends rows to one CSV file; Tracker's other calls (images, videos) do nothing here."""

    def __init__(self, path: Path, keep_up_to: int | None) -> None:
        rows = []
        if path.exists() and keep_up_to is not None:  # resumed: drop rows logged after the checkpoint
            with path.open(newline="") as f:
                rows = [row for row in csv.reader(f) if row[0] == "step" or int(row[0]) <= keep_up_to]
        self.file = path.open("w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerows(rows or [["step", "metric", "value"]])

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.writer.writerows([step, key, value] for key, value in metrics.items())
        self.file.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        self.file.close()


def make_tracker(run) -> CSVTracker | None:
    """Called for every starting run with its `lab.api.RunInfo`; None stays out of it."""
    if run.purpose != "train":  # `lab eval` adds no training rows
        return None
    options = run.tracker_options["csv"]  # the resolved CSVOptions of this run
    return CSVTracker(run.run_dir / options.csv_file, run.start_step if run.resumed else None)


@hookimpl
def register_trackers(register) -> None:
    register("csv", make_tracker, description="step,metric,value rows in the run folder", options=CSVOptions)
