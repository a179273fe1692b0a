"""Experiment trackers: where metrics, images and videos go.

`metrics.jsonl` is written by the built-in `jsonl` tracker; W&B and TensorBoard are other
tracker plugins. Every tracker registered through `register_trackers` sees every run and
decides in its factory whether to take part.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class Tracker:
    """Base class: override what your backend supports; the rest are no-ops."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at `step` (the run's global_step)."""

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG already written under the run's media/ folder."""

    def log_video(self, key: str, path: Path, step: int) -> None:
        """An MP4 already written under the run's media/ folder."""

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        """A file to version (checkpoints when the user asks for artifacts)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended; `summary["status"]` says how."""


def jsonable(value: Any) -> Any:
    """Plain floats/ints for JSON; NaN and inf become None so every line stays valid JSON."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
