"""Moved to `lab.api.errors` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.errors import LabError, close_matches, unknown

__all__ = ["LabError", "close_matches", "unknown"]
