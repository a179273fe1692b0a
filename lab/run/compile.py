"""`--compile auto|true|false`: torch.compile (inductor) for a plugin's hot functions, as one service.

A plugin wraps the functions that run on every step (a loss, an acting pass) with
`ctx.compile(fn, name=..., calls=..., pays_on_cpu=...)` and calls the result as it would
call `fn`. The choice is made at the first call, when the run's budget is known:

- `false`: never compiled;
- `true`: always compiled;
- `auto` (the default): compiled when the run calls the function at least
  `AUTO_MIN_CALLS` times, so the compile time (seconds to a minute) is repaid, and, on a
  CPU, only where the plugin measured that compiling pays there (`pays_on_cpu`: on the
  project's 2-core CPU a batch-32 Nature-CNN DQN update gains, a batch-1 acting pass and
  small MLPs lose).

Where torch.compile cannot run (no C++ compiler for inductor's CPU kernels, an unsupported
Python) or fails on the function, the run goes on eagerly after a one-line note. The time
the first, compiling call took is printed and logged as `perf/compile_s` (the runner adds
it to the step's metrics), so steady-state speed can be told apart from start-up.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

CompileSetting = Literal["auto", "true", "false"]
# A compile costs ~3-10 s on the project's CPU and saves a few ms a call where it pays.
AUTO_MIN_CALLS = 10_000


def unavailable_reason() -> str | None:
    """Why torch.compile cannot run here, or None when it can."""
    from torch._dynamo.eval_frame import is_dynamo_supported  # torch._dynamo's __all__ omits it

    if not is_dynamo_supported():
        return f"torch.compile does not support Python {sys.version_info.major}.{sys.version_info.minor} yet"
    if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) on PATH for inductor's CPU kernels"
    return None


@dataclass
class HotFunction:
    """`fn`, eager or compiled as `setting` decides at the first call (see the module doc)."""

    fn: Callable[..., Any]
    name: str
    setting: CompileSetting
    device: torch.device
    calls: Callable[[], int]  # how often the run will call it: asked at the first call
    pays_on_cpu: bool
    report: Callable[[str, float], None]  # (name, seconds the compiling call took)
    compiled: bool | None = None  # None until the first call decides
    _impl: Callable[..., Any] | None = field(default=None, repr=False)

    def wanted(self) -> bool:
        if self.setting != "auto":
            return self.setting == "true"
        pays = self.device.type == "cuda" or self.pays_on_cpu
        return pays and self.calls() >= AUTO_MIN_CALLS

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self._first_call(args, kwargs)
        if self.compiled:
            assert self._impl is not None  # the first call set it before it set `compiled`
            return self._impl(*args, **kwargs)
        return self.fn(*args, **kwargs)

    def _first_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.compiled = False
        if not self.wanted():
            return self.fn(*args, **kwargs)
        reason = unavailable_reason()
        if reason is not None:
            print(f"note: {self.name} runs eagerly: {reason}", file=sys.stderr, flush=True)
            return self.fn(*args, **kwargs)
        self._impl = torch.compile(self.fn, dynamic=False)
        start = time.perf_counter()
        try:
            result = self._impl(*args, **kwargs)
        except Exception as exc:  # inductor or dynamo gave up: the eager function still works
            from lab.signals import STOP

            if STOP.requested:  # Ctrl-C reached the compiler's workers too: the user stopped it, nothing failed
                self.compiled = None  # (a resumed process compiles again)
                return self.fn(*args, **kwargs)
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            print(f"note: {self.name} runs eagerly: torch.compile failed ({type(exc).__name__}: {first_line})",
                  file=sys.stderr, flush=True)
            return self.fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.compiled = True
        self.report(self.name, seconds)
        return result
