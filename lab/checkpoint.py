"""Checkpoints: written atomically (temp file + rename), read with weights_only=True."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lab.atomic import atomic_write
from lab.errors import LabError


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` so that `path` always holds either the old or the new complete file."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing or corrupt file is a LabError naming the fix."""
    if not path.is_file():
        raise LabError(f"checkpoint '{path}' does not exist; the run has no saved state to continue from")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabError(
            f"checkpoint '{path}' is corrupt or unreadable ({first[:120]}); "
            "restore it from a backup or use checkpoints/best.pt"
        ) from None
    if not isinstance(state, dict) or "algorithm" not in state or "global_step" not in state:
        raise LabError(f"checkpoint '{path}' is not an arcade-lab checkpoint (missing keys); use a file the lab wrote")
    return state
