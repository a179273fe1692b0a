"""Moved to `lab.api.agent` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.agent import Agent

__all__ = ["Agent"]
