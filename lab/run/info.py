"""Moved to `lab.api.info` (import from `lab.api`); this module stays so that trackers written
for arcade-lab 0.1 import unchanged."""

from lab.api.info import RunInfo

__all__ = ["RunInfo"]
