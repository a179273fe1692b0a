"""Moved to `lab.api.config` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.config import check_ranges, flag, option

__all__ = ["check_ranges", "flag", "option"]
