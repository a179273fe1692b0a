"""The run loop's own bookkeeping, saved with every checkpoint (its "runner" section), so a
run stopped and resumed logs what the same run left alone logs, step for step; and its
cadence: when it logs a row, evaluates and checkpoints."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from lab.run.run_config import RunConfig


@dataclass
class LoopState:
    """best / best_step: the key metric's best evaluation so far; last_values: the last value
    logged of every metric (the summary's); pending: `train_step` metrics since the last log
    row (averaged into it); last_log_step / last_eval_step: where the last row and evaluation
    were; trained_before: seconds trained by earlier processes of this run; evaluation_due: a
    stop cut the evaluation at this step short (a resume redoes it first); complete: the run
    reached its budget and did its last evaluation and media (a resume at the budget is refused
    only then)."""

    best: float | None = None
    best_step: int | None = None
    last_values: dict[str, Any] = field(default_factory=dict)
    pending: defaultdict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    last_log_step: int = 0
    last_eval_step: int = -1
    trained_before: float = 0.0
    evaluation_due: bool = False
    complete: bool = False

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
                "last_log_step": self.last_log_step, "last_eval_step": self.last_eval_step, "horizon": horizon,
                "evaluation_due": self.evaluation_due, "complete": self.complete}

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
                   trained_before=float(runner.get("elapsed", 0.0)),
                   evaluation_due=bool(runner.get("evaluation_due", False)),
                   complete=bool(runner.get("complete", True)))  # before the field: a run at its budget was done


@dataclass(frozen=True)
class Cadence:
    """Every how many steps the loop logs a row, evaluates and checkpoints. Steps jump by
    several at a time (num_envs, a rollout), so each is asked whether a step range crossed it."""

    log_every: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def of(cls, run: RunConfig, steps_per_epoch: int | None, total: int) -> Cadence:
        """The run's intervals, else: ten rows and one evaluation an epoch for dataset
        algorithms; a hundred rows (at most every 1,000 steps) and ten evaluations a run for
        the others; a checkpoint at every evaluation."""
        if steps_per_epoch:
            log_default, eval_default = max(1, steps_per_epoch // 10), steps_per_epoch
        else:
            log_default, eval_default = max(1, min(1000, total // 100)), max(1, total // 10)
        eval_every = run.eval_interval or eval_default
        return cls(run.log_interval or log_default, eval_every, run.checkpoint_interval or eval_every)

    def logs(self, before: int, after: int) -> bool:
        return crossed(before, after, self.log_every)

    def evaluates(self, before: int, after: int) -> bool:
        return crossed(before, after, self.eval_every)

    def checkpoints(self, before: int, after: int) -> bool:
        return crossed(before, after, self.checkpoint_every)


def crossed(before: int, after: int, interval: int) -> bool:
    """True when (before, after] passed a multiple of `interval`."""
    return after // interval > before // interval
