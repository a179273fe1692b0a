"""What a plugin's settings are made of: `option(default, help)` fields and range checks.

A plugin's `Config` is a dataclass; every field becomes a `--field-name` flag, a YAML key
and a preset entry (`lab.run.settings` resolves them: defaults < preset < `--config FILE`
< flags). Fields are declared with `option`, and `__post_init__` checks ranges with
`check_ranges`, so a bad value is one clear `error:` line, never a traceback in training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import field
from typing import Any

from lab.api.errors import shorten

_NO_DEFAULT: Any = dataclasses.MISSING


def option(default: Any = _NO_DEFAULT, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its `--help` text: `learning_rate: float = option(3e-4, "Adam learning rate")`.

    Every field of a plugin's `Config` dataclass becomes a `--field-name` flag, a YAML key and
    a preset entry; `help` is what `lab train ALGO --help` shows. `factory` makes a fresh
    default per instance (for mutable values).
    """
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# The range rules plugin configs share: (test, how the one-line error states it).
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: v > 0, "must be positive"),
    "at_least_one": (lambda v: v >= 1, "must be >= 1"),
    "non_negative": (lambda v: v >= 0, "must be >= 0"),
    "fraction": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "below_one": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
}


def check_ranges(config: Any, **rules: Sequence[str]) -> None:
    """Raise ValueError (shown as one `error:` line) for the first field outside its range.

    `check_ranges(self, positive=("learning_rate",), fraction=("gamma",))`; the rules are
    positive, at_least_one, non_negative, fraction ([0, 1]) and below_one ([0, 1)). A None
    value (an optional setting left off) passes; a tuple (`net_arch`: widths) must keep the
    rule in every entry; NaN and inf fail every rule.
    """
    for rule, names in rules.items():
        test, says = _RULES[rule]
        for name in names:
            value = getattr(config, name)
            several = isinstance(value, (tuple, list))
            entries = value if several else () if value is None else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in entries):
                problem = "must be a finite number"
            elif not all(test(v) for v in entries):
                problem = says
            else:
                continue
            shown = shorten(",".join(map(str, value))) if several else shorten(value)
            raise ValueError(f"--{flag(name)} {problem}{' in every entry' * several}, got {shown}")


def flag(name: str) -> str:
    """The flag of a field: `learning_rate` -> `learning-rate` (written `--learning-rate`)."""
    return name.replace("_", "-")
