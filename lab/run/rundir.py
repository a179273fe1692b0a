"""The run directory contract: config.yaml, metrics.jsonl, summary.json, checkpoints/, media/."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from lab.api import LabError
from lab.atomic import atomic_write
from lab.files import writing
from lab.run.yamlfile import InvalidYAML, read_yaml

VERSIONED = ("arcade-lab", "torch", "numpy", "gymnasium", "ale-py", "stable-baselines3", "pluggy", "wandb", "tensorboard")


def default_run_name(algo: str, target: str | None, seed: int | None) -> str:
    """algo-target-sSEED-time; without a seed, the name several seeds' runs share as a stem."""
    where = "".join(c if c.isalnum() or c in "._-" else "-" for c in (target or "none"))
    return f"{algo}-{where}{'' if seed is None else f'-s{seed}'}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(root: Path, name: str) -> Path:
    """Make a new run directory; an existing one is never reused or overwritten, except one a
    killed `lab train` left with nothing in it but its lock (it died before it wrote anything).
    A file system that refuses it is one line (`lab.files`)."""
    run_dir = root / name
    if run_dir.is_dir() and _only_a_dead_lock(run_dir):
        print(f"note: '{run_dir}' holds only the lock of a process killed as it started; taking it",
              file=sys.stderr)
        (run_dir / ".lock").unlink(missing_ok=True)
        if (run_dir / "checkpoints").is_dir():
            (run_dir / "checkpoints").rmdir()
        run_dir.rmdir()
    if run_dir.exists() or run_dir.is_symlink():
        raise LabError(_name_taken(run_dir))
    made = False
    with writing(run_dir, "create run folder", "choose another --runs-dir"):
        root.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir()  # not exist_ok: of two processes given one name, one gets it
            made = True
            (run_dir / "checkpoints").mkdir()
        except BaseException:
            if made:  # the empty folder just made, and nothing else
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            raise
    return run_dir


def _name_taken(run_dir: Path) -> str:
    """Why `lab train --name` cannot make `run_dir`, which exists, and the way on."""
    if not run_dir.is_dir():
        return f"'{run_dir}' is a file, not a run folder; choose another --name, or move the file away"
    holder = lock_holder(run_dir)
    if holder:
        return f"run '{run_dir}' already exists and is in use by {holder}; choose another --name"
    if not (run_dir / "config.yaml").is_file():
        return f"'{run_dir}' already exists and is not a run folder (no config.yaml); choose another --name"
    if not has_checkpoint(run_dir):
        return f"run '{run_dir}' already exists but {NEVER_CHECKPOINTED}; {train_again(run_dir)}"
    return f"run '{run_dir}' already exists; choose another --name, or continue it with `lab resume {run_dir}`"


# what `lab train --name`, `lab resume`, a failed first checkpoint and `lab runs` all say of a run
# folder left with its config.yaml but no checkpoint: one way on, the same from every command
NEVER_CHECKPOINTED = ("holds no checkpoint (it stopped before saving its first one: a full disk, or a kill), "
                      "so nothing can resume it")


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints" / name).is_file() for name in ("latest.pt", "best.pt"))


def train_again(run_dir: Path) -> str:
    """The way on for a run folder that has no checkpoint: its metrics are the user's to delete."""
    return f"delete it (`rm -r {run_dir}`) and train it again, or train under another --name"


def after_failed_save(run_dir: Path) -> str:
    """What a checkpoint write that failed leaves, and the way on: the older checkpoints and
    `lab resume`; before the first checkpoint, nothing resumes, so the same way as `lab resume`
    and `lab train --name` then give."""
    if has_checkpoint(run_dir):
        return f"the older checkpoints are kept: once fixed, `lab resume {run_dir}` continues the run"
    return f"it was the run's first, so nothing can resume the run: once fixed, {train_again(run_dir)}"


def _only_a_dead_lock(run_dir: Path) -> bool:
    names = {p.name for p in run_dir.iterdir()}
    checkpoints = run_dir / "checkpoints"
    empty = not checkpoints.exists() or (checkpoints.is_dir() and not any(checkpoints.iterdir()))
    return names <= {".lock", "checkpoints"} and empty and ".lock" in names and lock_holder(run_dir) == ""


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run's lock now: their line (`pid N on HOST (lab train since ...)`) while
    they live; "" when a lock file is left by a process that died (killed); None without one."""
    path = run_dir / ".lock"
    try:
        with open(path, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
            return ""
    except OSError:
        return None


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
        run_dir = self.path.parent
        refused = (self.path, "lock run", "copy the run folder somewhere writable and use the copy")
        while True:
            with writing(*refused):
                handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise LabError(
                    f"run '{run_dir}' is in use by {holder}; wait for it to finish, "
                    "or stop it (Ctrl-C in its terminal, or kill -INT PID) and try again"
                ) from None
            if os.path.exists(self.path) and os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                break
            handle.close()  # the holder removed the file while we waited for it: lock the new one
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            print(f"note: taking over the lock of {stale}, which is no longer running", file=sys.stderr)
        try:
            with writing(*refused):
                handle.seek(0)
                handle.truncate()
                started = time.strftime("%Y-%m-%d %H:%M:%S")
                handle.write(f"pid {os.getpid()} on {socket.gethostname()} (`lab {command}` since {started})\n")
                handle.flush()
        except LabError:
            handle.close()
            raise
        self._file = handle
        remove_stale_temporaries(run_dir)
        return self

    def wait_until_free(self, seconds: float) -> None:
        """Wait (at most `seconds`) while a live process holds the lock: one that is stopping
        (a run whose supervisor died, saving its checkpoint) lets go in a few seconds."""
        deadline = time.monotonic() + seconds
        while self.path.exists() and time.monotonic() < deadline:
            try:
                with open(self.path, "a+", encoding="utf-8") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                time.sleep(0.2)
            except OSError:
                return

    def release(self) -> None:
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete what atomic writes of killed processes left (`.latest.pt.*.tmp`: an Atari checkpoint
    with its replay is gigabytes). Only the lock holder calls this, so no writer is alive."""
    folders = (run_dir, run_dir / "checkpoints", run_dir / "checkpoints" / "replay", run_dir / "media")
    stale = [p for folder in folders if folder.is_dir()
             for p in folder.glob(".*.tmp") if p.is_file()]
    if not stale:
        return
    size = sum(p.stat().st_size for p in stale)
    for path in stale:
        path.unlink(missing_ok=True)
    print(f"note: removed {len(stale)} temporary file{'s' * (len(stale) > 1)} ({size / 1e6:.1f} MB) left by a "
          "process killed while writing", file=sys.stderr)


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
        doc = read_yaml(path, f"'{path}'")
    except InvalidYAML:
        doc = None
    if not isinstance(doc, dict) or "algo" not in doc or "run" not in doc:
        raise LabError(f"'{path}' is corrupt (not the YAML `lab train` wrote); restore it or start a new run")
    return doc


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json, or {} where it is missing or unreadable (or, hand-edited, not an object)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl. A line that is not a row (torn by a killed process, an edit that
    left a non-UTF-8 byte or a `global_step` that is not a number) is skipped, and a note says
    how many were."""
    rows, skipped = [], 0
    path = run_dir / "metrics.jsonl"
    lines = [line for line in path.read_bytes().splitlines() if line.strip()] if path.is_file() else []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is a ValueError too
            skipped += i < len(lines) - 1  # a torn last line is what a kill leaves: no news
            continue
        step = row.get("global_step") if isinstance(row, dict) else None
        if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step):
            rows.append({**row, "global_step": int(step)})
        else:
            skipped += 1
    if skipped:
        print(f"note: skipped {skipped} unreadable line{'s' * (skipped > 1)} of {path}", file=sys.stderr)
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
