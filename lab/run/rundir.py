"""The run directory contract: config.yaml, metrics.jsonl, summary.json, checkpoints/, media/."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from lab.run.atomic import atomic_write
from lab.errors import LabError

VERSIONED = ("arcade-lab", "torch", "numpy", "gymnasium", "ale-py", "stable-baselines3", "pluggy", "wandb", "tensorboard")


def default_run_name(algo: str, target: str | None, seed: int | None) -> str:
    """algo-target-sSEED-time; without a seed, the name several seeds' runs share as a stem."""
    where = "".join(c if c.isalnum() or c in "._-" else "-" for c in (target or "none"))
    return f"{algo}-{where}{'' if seed is None else f'-s{seed}'}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(root: Path, name: str) -> Path:
    """Make a new run directory; an existing one is never reused or overwritten."""
    run_dir = root / name
    if run_dir.exists():
        raise LabError(
            f"run '{run_dir}' already exists; choose another --name, or continue it with `lab resume {run_dir}`"
        )
    try:
        (run_dir / "checkpoints").mkdir(parents=True)
    except OSError as exc:
        raise LabError(f"cannot create run directory '{run_dir}' ({exc.strerror}); check --runs-dir") from None
    return run_dir


class RunLock:
    """One process at a time per run directory: `lab train`, `lab resume` and `lab eval`
    hold `.lock` while they use it, so a second process cannot silently interleave its
    metrics, checkpoints and W&B history with the first one's.

    The lock is an flock on the file, which the kernel drops when its process dies; the
    file also names the holder, so a lock left behind by a killed process is recognised
    (flock succeeds while the file still names someone) and taken over with a message.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._file: Any = None

    def acquire(self, command: str) -> RunLock:
        while True:
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise LabError(
                    f"run '{self.path.parent}' is in use by {holder}; wait for it to finish, "
                    "or stop it (Ctrl-C in its terminal, or kill -INT PID) and try again"
                ) from None
            if os.path.exists(self.path) and os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                break
            handle.close()  # the holder removed the file while we waited for it: lock the new one
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            print(f"note: taking over the lock of {stale}, which is no longer running", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} (`lab {command}` since {started})\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_config(run_dir: Path, doc: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(doc, sort_keys=False))


def read_config(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise LabError(f"run directory '{run_dir}' does not exist; list runs with `lab runs`")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise LabError(f"'{run_dir}' is not a run directory (no config.yaml); pass a directory made by `lab train`")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict) or "algo" not in doc or "run" not in doc:
        raise LabError(f"'{path}' is corrupt (not the YAML `lab train` wrote); restore it or start a new run")
    return doc


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a torn last line (a killed process) is skipped."""
    rows = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "global_step" in row:
                rows.append(row)
    return rows


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop rows logged after the checkpoint a resumed run restarts from."""
    rows = [r for r in read_metrics(run_dir) if r["global_step"] <= step]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def versions() -> dict[str, str]:
    out = {}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import platform

    out["python"] = platform.python_version()
    return out


def git_commit(path: Path) -> str | None:
    """The commit of the code that ran (the lab's checkout, else the working directory)."""
    for where in (Path(__file__).resolve().parent, path):
        try:
            result = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return result.stdout.strip()
    return None
