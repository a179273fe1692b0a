"""Checkpoints: written atomically (temp file + rename), read with weights_only=True."""

from __future__ import annotations

import pickle
import re
import textwrap
from pathlib import Path
from typing import Any

import torch

from lab.run.atomic import atomic_write
from lab.api import LabError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours parts of its weights_only message


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` so that `path` always holds either the old or the new complete file; a
    disk that is full or read-only is one LabError (the older file stays as it was)."""
    try:
        atomic_write(path, lambda handle: torch.save(state, handle))
    except (OSError, RuntimeError) as exc:
        reason = _write_failure(exc)
        if reason is None:
            raise
        raise LabError(f"cannot write checkpoint '{path}' ({reason}); the older checkpoints are kept: free disk space "
                       f"or make the folder writable, then `lab resume {path.parent.parent}`") from None


def _write_failure(exc: BaseException) -> str | None:
    """Why a write failed, when it was the file system (full, read-only, no permission), else None.
    torch.save reports a failed write of its zip writer as a RuntimeError around the OSError."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc.strerror or str(exc)
        if isinstance(exc, RuntimeError) and "write" in str(exc).lower() and "fail" in str(exc).lower():
            return str(exc).splitlines()[0][:120]
        exc = exc.__cause__ or exc.__context__
    return None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing or corrupt file is a LabError naming the fix."""
    if not path.is_file():
        raise LabError(f"checkpoint '{path}' does not exist; the run has no saved state to continue from")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
        text = _ANSI.sub("", str(exc)).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        detail = textwrap.shorten(first, width=120, placeholder=" ...")  # at a word boundary
        raise LabError(
            f"checkpoint '{path}' is corrupt or unreadable ({detail}); "
            "restore it from a backup or use checkpoints/best.pt"
        ) from None
    if not isinstance(state, dict) or "algorithm" not in state or "global_step" not in state:
        raise LabError(f"checkpoint '{path}' is not an arcade-lab checkpoint (missing keys); use a file the lab wrote")
    return state


def checkpoint_step(run_dir: Path) -> int | None:
    """The global_step of checkpoints/latest.pt, read without loading its tensors (mmap)."""
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:
        return None


def saved_horizon(state: dict[str, Any], default: int) -> int:
    """The schedule horizon a checkpoint was trained with (checkpoints before the runner
    kept it hold it in the algorithm's state)."""
    horizon = state.get("runner", {}).get("horizon") or state.get("algorithm", {}).get("horizon")
    return int(horizon) if horizon else default
