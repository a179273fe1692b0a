"""Moved to `lab.api.algorithm` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.algorithm import Algorithm, Pace

__all__ = ["Algorithm", "Pace"]
