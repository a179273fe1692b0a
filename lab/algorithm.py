"""Moved to `lab.api.algorithm` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.algorithm import Algorithm, Kind, Pace

__all__ = ["Algorithm", "Kind", "Pace"]
