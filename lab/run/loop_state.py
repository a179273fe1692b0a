"""The run loop's own bookkeeping, saved with every checkpoint (its "runner" section), so a
run stopped and resumed logs what the same run left alone logs, step for step."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class LoopState:
    """best / best_step: the key metric's best evaluation so far; last_values: the last value
    logged of every metric (the summary's); pending: `train_step` metrics since the last log
    row (averaged into it); last_log_step / last_eval_step: where the last row and evaluation
    were; trained_before: seconds trained by earlier processes of this run."""

    best: float | None = None
    best_step: int | None = None
    last_values: dict[str, Any] = field(default_factory=dict)
    pending: defaultdict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    last_log_step: int = 0
    last_eval_step: int = -1
    trained_before: float = 0.0

    def offer(self, value: Any, mode: Literal["max", "min"], step: int) -> bool:
        """Keep `value` of the key metric as the best if it is finite and better; True if it was."""
        if value is None or not math.isfinite(float(value)):
            return False
        better = max if mode == "max" else min
        if self.best is not None and better(float(value), self.best) == self.best:
            return False
        self.best, self.best_step = float(value), step
        return True

    def row(self) -> dict[str, float]:
        """The pending `train_step` metrics averaged (device tensors become numbers here, once
        a row: no host sync per step), and pending cleared."""
        row = {name: sum(float(v) for v in values) / len(values) for name, values in self.pending.items() if values}
        self.pending.clear()
        return row

    def state_dict(self, elapsed: float, horizon: int) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "elapsed": elapsed,
                "last_values": dict(self.last_values), "pending": {k: list(v) for k, v in self.pending.items()},
                "last_log_step": self.last_log_step, "last_eval_step": self.last_eval_step, "horizon": horizon}

    @classmethod
    def from_state(cls, runner: dict[str, Any], step: int) -> LoopState:
        """The bookkeeping a checkpoint at `step` saved (checkpoints from before a field
        existed: what the loop would have had at that step)."""
        best = runner.get("best")
        return cls(best=best, best_step=runner.get("best_step"),
                   last_values=dict(runner.get("last_values", {})),
                   pending=defaultdict(list, {k: list(v) for k, v in runner.get("pending", {}).items()}),
                   last_log_step=int(runner.get("last_log_step", step)),
                   last_eval_step=int(runner.get("last_eval_step", step if best is not None else -1)),
                   trained_before=float(runner.get("elapsed", 0.0)))
