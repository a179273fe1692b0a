"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class LabError(Exception):
    """A problem with the user's input (name, flag, file) that they can fix."""


def _initials(name: str) -> str:
    """'--learning-rate' -> 'lr': the abbreviation users type for a multi-word name."""
    return "".join(word[0] for word in re.split(r"[-_]+", name.lstrip("-").lower()) if word)


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ' (did you mean: a, b?)' for names similar to `name`, or ''.

    Abbreviations come first (`--lr` -> `--learning-rate`): difflib scores them too low to find.
    """
    pool = list(candidates)
    short = name.lstrip("-").lower()
    abbreviated = sorted(c for c in pool if len(short) > 1 and _initials(c) == short)
    matches = difflib.get_close_matches(name, pool, n=n, cutoff=0.5)
    if not matches:
        lowered = name.lower()
        matches = [c for c in pool if lowered in c.lower()][:n]
    matches = list(dict.fromkeys(abbreviated + matches))[:n]
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""


def unknown(what: str, name: str, candidates: Iterable[str], hint: str) -> LabError:
    """Build the standard 'unknown X' error with close matches and a fix."""
    return LabError(f"unknown {what} '{name}'{close_matches(name, candidates)}; {hint}")
