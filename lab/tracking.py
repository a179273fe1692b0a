"""Moved to `lab.api.tracking` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.tracking import Tracker, jsonable

__all__ = ["Tracker", "jsonable"]
