"""Moved to `lab.api.config` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.config import option, check_ranges, flag

__all__ = ["option", "check_ranges", "flag"]
