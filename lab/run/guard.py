"""The divergence guard: a loss or weight that stops being finite ends the run as `diverged`.

It watches the loop's log rows (a loss that is NaN or infinite) and every state about to be
evaluated or saved (a weight that is), so nothing non-finite is ever written to a checkpoint
or becomes `best.pt`; latest.pt stays the last finite state, which `lab resume` continues.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lab.api import RunStatus
from lab.run.events import Observer, StopRun


def non_finite_loss(row: dict[str, Any]) -> str | None:
    """The first loss in a log row that is NaN or infinite ("train/loss is nan"), else None."""
    for name, value in row.items():
        if "loss" in name.rsplit("/", 1)[-1] and isinstance(value, float) and not math.isfinite(value):
            return f"{name} is {value}"
    return None


def non_finite_tensor(state: Any, where: str = "") -> str | None:
    """The first floating tensor of `state` (nested dicts and lists, replay contents under
    "buffers" left out) with a NaN or infinite entry, as "q.0.weight has nan", else None.
    One host sync per device for the whole state, so a CUDA run pays it only at checkpoints."""
    tensors: list[tuple[str, torch.Tensor]] = []

    def collect(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.numel():
                tensors.append((path, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "buffers":
                    collect(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                collect(item, f"{path}.{i}")

    collect(state, where)
    if not tensors:
        return None
    finite = [t.isfinite().all() for _, t in tensors]
    by_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for flag in finite:
        by_device[flag.device].append(flag)
    if all(bool(torch.stack(flags).all()) for flags in by_device.values()):
        return None
    path, tensor = next((path, t) for (path, t), ok in zip(tensors, finite, strict=True) if not bool(ok))
    kind = "nan" if bool(tensor.isnan().any()) else "inf"
    return f"{path} has {kind}"


class DivergenceGuard(Observer):
    """Stops the run as `diverged` with one line: what went non-finite where, the likely
    cause, and what `lab resume` would continue from (`saved_step()`: latest.pt's step)."""

    def __init__(self, run_dir: Path, learning_rate: Any, saved_step: Callable[[], int | None]) -> None:
        self.run_dir = run_dir
        self.learning_rate = learning_rate
        self.saved_step = saved_step

    def row(self, step: int, row: dict[str, float]) -> None:
        self._check(step, non_finite_loss(row))

    def state(self, step: int, algorithm_state: dict[str, Any]) -> None:
        self._check(step, non_finite_tensor(algorithm_state))

    def _check(self, step: int, problem: str | None) -> None:
        if problem is None:
            return
        lr = self.learning_rate
        cause = f"the learning rate ({lr:g}) is likely too high" if isinstance(lr, float) else \
            "a learning rate too high is the usual cause"
        saved = self.saved_step()
        resume = (f"checkpoints/latest.pt is the last finite state (step {saved:,}): `lab resume {self.run_dir}` "
                  "continues from it" if saved is not None else "no finite checkpoint was saved")
        raise StopRun(RunStatus.DIVERGED, f"error: diverged at step {step:,}: {problem}; {cause}; {resume}\n")
