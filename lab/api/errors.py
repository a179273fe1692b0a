"""User-facing errors: the CLI prints them as one line and exits with code 2.

A message stays one line of bounded length whatever the input it quotes: a value is quoted
with `shorten` (its start, and how long it was), and a LabError's text as a whole is cut to
`MESSAGE_LIMIT` characters, keeping its start and its end (where the fix is named).
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable

MESSAGE_LIMIT = 500  # characters of one error line: a few lines of a terminal
VALUE_LIMIT = 80  # characters of one value a message quotes: a name, a path, a number

# control characters (a line break in a quoted value) written as escapes: a message stays one line
_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(32), 127)}
_CONTAINERS = reprlib.Repr()  # writes the first few items of a list or a mapping: cheap on any size
_CONTAINERS.maxstring = _CONTAINERS.maxother = VALUE_LIMIT


class LabError(Exception):
    """A problem with the user's input (name, flag, file) that they can fix.

    Its text is one line of at most about `MESSAGE_LIMIT` characters, however long the
    message it was given: what it quotes cannot make the CLI print megabytes.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())


def one_line(message: str) -> str:
    """`message` as one line of at most `MESSAGE_LIMIT` characters: its control characters
    escaped and, if it is longer, its middle cut, keeping the start and the fix at its end."""
    text = message.translate(_ESCAPES)
    if len(text) <= MESSAGE_LIMIT:
        return text
    tail = MESSAGE_LIMIT // 5
    head = MESSAGE_LIMIT - tail - 40  # the marker is under 40 characters
    return f"{text[:head]} [... {len(text) - head - tail:,} characters cut ...] {text[-tail:]}"


def shorten(value: object, limit: int = VALUE_LIMIT) -> str:
    """`value` as a message quotes it: its text on one line, cut after `limit` characters with
    a note of its length (`f"'{shorten(name)}'"` reads `'aaaa...' (1,000,000 characters)`);
    a list or a mapping shows its first items."""
    if isinstance(value, (list, tuple, dict, set, frozenset)):  # reprlib's `[1, 2, 3, ...]` is short already
        text = _CONTAINERS.repr(value).translate(_ESCAPES)
        return text if len(text) <= limit else f"{text[:limit]}..."
    text = str(value).translate(_ESCAPES)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


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
    return LabError(f"unknown {what} '{shorten(name)}'{close_matches(name, candidates)}; {hint}")
