"""Moved to `lab.api.hookspecs` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec"]
