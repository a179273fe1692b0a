"""`lab last RUN_DIR [METRIC]`: a command that prints the last logged value of a metric.

A complete command plugin: `register_commands` adds a subcommand with its own arguments,
and `lab --help` lists it.

    lab last runs/RUN eval/return_mean --plugins-dir docs/examples
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from lab.api import LabError, hookimpl


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory")
    parser.add_argument("metric", nargs="?", help="a metric name (default: the algorithm's key metric)")


def last(args: argparse.Namespace, lab) -> int:
    """Print METRIC's last value in RUN_DIR/metrics.jsonl and its step; returns the exit code."""
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise LabError(f"{run_dir} has no metrics.jsonl; pass a run directory (`lab runs` lists them)")
    metric = args.metric
    if metric is None:  # `lab` holds the loaded plugins: ask the run's algorithm for its key metric
        algo = yaml.safe_load((run_dir / "config.yaml").read_text())["algo"]
        metric = lab.registry.algorithm(algo).key_metric
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    found = [row for row in rows if row.get(metric) is not None]
    if not found:
        logged = sorted({key for row in rows for key in row} - {"global_step", "time"})
        raise LabError(f"{run_dir} logged no {metric}; it logged {', '.join(logged)}")
    print(f"{metric} = {found[-1][metric]} at step {found[-1]['global_step']}")
    return 0


@hookimpl
def register_commands(register) -> None:
    register("last", last, description="the last logged value of a run's metric", arguments=arguments)
