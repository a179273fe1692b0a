"""Many runs from one command: `lab train ... --seeds 1,2,3` and `lab sweep SPEC.yaml`.

Each run is an ordinary `lab train` (or `lab resume`) in its own process, so it gets its
own run directory, checkpoints, W&B run and exact resume; this module only decides what
to run, keeps at most `parallel` of them going, passes Ctrl-C on, and tabulates results.
Runs of one command share a W&B group (`--experiment`), so the dashboard lines them up.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.api import LabError, RunStatus
from lab.run.rundir import RunLock, read_config, read_summary
from lab.signals import STOP, SUPERVISOR, signals_reach_every_process


@dataclass
class Job:
    """One `lab` invocation and the run directory it makes (or continues)."""

    args: list[str]
    run_dir: Path
    label: str
    params: dict[str, Any] = field(default_factory=dict)  # what sets this job apart (sweep tables)
    env: dict[str, str] = field(default_factory=dict)  # extra environment of its process (a bayes trial's study)
    # called with its process as soon as it starts (a sweep worker holds its claim until the run is locked)
    started: Callable[[subprocess.Popen[Any]], None] | None = None


def flag_value(value: Any) -> str:
    """A setting as the command line writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _same_number(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


# Where a run lives and how long it trains: a re-run may differ in them and still continue the same runs.
_NOT_COMPARED = {"steps", "epochs", "name", "experiment", "runs_dir"}


def check_same_settings(run_dir: Path, settings: dict[str, Any], change: str) -> None:
    """A run of this name must have been made with these settings (else the command changed)."""
    doc = read_config(run_dir)
    recorded = {**(doc.get("run") or {}), **(doc.get("config") or {}), "algo": doc.get("algo")}
    for key, value in settings.items():
        if key in recorded and key not in _NOT_COMPARED and flag_value(recorded[key]) != flag_value(value) \
                and not _same_number(recorded[key], value):
            raise LabError(f"{run_dir} was made with {key}={recorded[key]}, but {change} now says {value}; "
                           f"{'give the changed sweep another `name:`' if change == 'the spec' else 'pass another --name'}")


def continue_or_start(train: list[str], run_dir: Path, label: str, params: dict[str, Any],
                      settings: dict[str, Any], plugins_dir: str | None, change: str = "the command") -> Job:
    """The job that brings `run_dir` to its end: `train` (the `lab train` arguments) when it does
    not exist yet, `lab resume` when it was interrupted, nothing when it finished. A run still
    held by a process that is stopping (an orphan saving its checkpoint) is waited for."""
    args = train
    if run_dir.exists() and (run_dir / "config.yaml").is_file():
        RunLock(run_dir).wait_until_free(seconds=60)
        check_same_settings(run_dir, settings, change)
        status = read_summary(run_dir).get("status") if (run_dir / "summary.json").is_file() else None
        if status == RunStatus.FINISHED:
            args = []
        elif (run_dir / "checkpoints" / "latest.pt").is_file():
            args = ["resume", str(run_dir)]
        else:
            raise LabError(f"{run_dir} exists but has no checkpoint to continue from; "
                           "remove it and run the command again to redo it")
    if plugins_dir and args:
        args = [*args, "--plugins-dir", plugins_dir]
    return Job(args, run_dir, label, params)


def parse_seeds(text: str) -> list[int]:
    """'1,2,3' or '1-5' (or both: '1-3,7') -> [1, 2, 3, ...], each once."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        raise LabError(f"--seeds takes integers like 1,2,3 or 1-5; got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise LabError(f"--seeds needs distinct non-negative integers like 1,2,3; got '{text}'")
    return seeds


def parse_parallel(text: str | None) -> int:
    if text is None:
        return 1
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise LabError(f"--parallel takes a positive number of processes; got '{text}'")
    return value


def _stop_all(running: dict[subprocess.Popen, Any], sig: int) -> None:
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(sig)


def run_jobs(jobs: Iterable[Job], parallel: int, on_end: Callable[[Job, int], None] | None = None) -> dict[str, int]:
    """Run `jobs` (at most `parallel` at once, taken from the iterable as they start);
    {label: exit code}. Ctrl-C is passed on to the running jobs once per press (their first
    finishes the step and saves; a second stops at once) and no new job starts. One job at a
    time prints as usual; several at a time each write to a log file, and its report is
    printed when it ends. `on_end(job, exit code)` is called as each job ends (a bayes
    sweep tells its study), before the next is taken from `jobs`."""
    codes: dict[str, int] = {}
    upcoming, exhausted = iter(jobs), False  # a job is taken only when it can start (a bayes trial is asked then)
    running: dict[subprocess.Popen, tuple[Job, Any]] = {}
    forwarded = 0
    STOP.training = True  # from here on, a second Ctrl-C arrives as KeyboardInterrupt
    try:
        while True:
            try:
                while len(running) < parallel and not STOP.requested and not exhausted:
                    job = next(upcoming, None)
                    if job is None:
                        exhausted = True
                        break
                    log = None if parallel == 1 else tempfile.TemporaryFile(mode="w+")
                    # a session of its own: Ctrl-C reaches it only through us; it stops if we die
                    proc = subprocess.Popen([sys.executable, "-m", "lab", *job.args], stdout=log, stderr=log,
                                            start_new_session=True,
                                            env={**os.environ, **job.env, SUPERVISOR: str(os.getpid())})
                    print(f"started {job.label}: lab {shlex.join(job.args)}", file=sys.stderr, flush=True)
                    running[proc] = (job, log)
                    if job.started is not None:
                        job.started(proc)
                if not running:
                    break
                if STOP.requested and forwarded == 0:
                    forwarded = 1
                    if not signals_reach_every_process():
                        _stop_all(running, STOP.signum or signal.SIGINT)
                for proc in [p for p in running if p.poll() is not None]:
                    job, log = running.pop(proc)
                    codes[job.label] = proc.returncode
                    if log is not None:
                        log.seek(0)
                        tail = log.read().strip().splitlines()[-8:]
                        log.close()
                        print("\n".join(f"  {job.label}| {line}" for line in tail), file=sys.stderr)
                    print(f"ended {job.label}: exit {proc.returncode}", file=sys.stderr, flush=True)
                    if on_end is not None:
                        on_end(job, proc.returncode)
                time.sleep(0.1)
            except KeyboardInterrupt:  # a second Ctrl-C: the jobs stop at once too
                forwarded = 2
                _stop_all(running, signal.SIGINT)
    finally:
        for proc, (job, _) in running.items():
            proc.wait()
            codes.setdefault(job.label, proc.returncode)
    if STOP.requested and not exhausted:
        print("stopped: no new run was started after the signal", file=sys.stderr)
    return codes


def overall_exit_code(codes: dict[str, int]) -> int:
    """0 when every job finished; 130 when stopped by Ctrl-C; else the first failure's code."""
    if STOP.requested:
        return STOP.exit_code()
    failures = [code for code in codes.values() if code != 0]
    return failures[0] if failures else 0


def results_table(jobs: list[Job], metric: str | None, rank: str | None = None, most: int | None = None) -> str:
    """Markdown: one row per job with its settings, status and `metric` (the best value if it
    is the run's key metric, else the last, and the column says which); ranked by it when
    `rank` is maximize/minimize; the first `most` rows, and a line counting the others."""
    rows, kinds = [], set()
    for job in jobs:
        summary = read_summary(job.run_dir) if (job.run_dir / "summary.json").is_file() else {}
        name = metric or summary.get("key_metric")
        best = name is not None and name == summary.get("key_metric")
        value = summary.get("best") if best else summary.get(name) if name else None
        if value is not None:
            kinds.add("best" if best else "last")
        rows.append((job, summary.get("status", "not run"), name, value))
    if rank:
        ranked = sorted((r for r in rows if isinstance(r[3], (int, float))), key=lambda r: r[3],
                        reverse=rank == "maximize")
        rows = ranked + [r for r in rows if not isinstance(r[3], (int, float))]
    columns = list(dict.fromkeys(key for job in jobs for key in job.params))
    shown = metric or next((r[2] for r in rows if r[2]), "metric")
    head = ["run", *columns, "status", f"{' / '.join(sorted(kinds)) or 'best'} {shown}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for job, status, _, value in rows[:most]:
        cells = [job.run_dir.name, *(f"{job.params.get(c, '-'):.4g}" if isinstance(job.params.get(c), float)
                                     else str(job.params.get(c, "-")) for c in columns), status,
                 f"{value:.6g}" if isinstance(value, (int, float)) else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if most is not None and len(rows) > most:
        lines.append(f"\n({len(rows) - most:,} more runs not shown)")
    return "\n".join(lines)

