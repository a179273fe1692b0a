"""What a tracker or lifecycle hook knows about a run, and how a run can end."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class RunStatus(str, Enum):
    """How a run ended, as summary.json's `status` records it (the value is the word written).

    `pruned` is a sweep's trial its pruner stopped; `diverged` a run whose loss or weights
    stopped being finite. Both, like `interrupted`, leave a checkpoint to resume from."""

    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"
    DIVERGED = "diverged"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def read(cls, summary: dict[str, Any], missing: RunStatus | None = None) -> RunStatus:
        """The status a summary.json records; none reads as `missing` (default: failed), and
        one this version does not know (a damaged file) as failed."""
        if "status" not in summary:
            return missing or cls.FAILED
        try:
            return cls(summary["status"])
        except ValueError:
            return cls.FAILED


@dataclass
class RunInfo:
    """A starting run as trackers and lifecycle hooks see it (`factory(run)`, `on_run_start(run)`):
    its folder, what it trains on, its resolved config and, per tracker, its resolved options."""

    name: str  # the run directory's name; also the W&B run id
    run_dir: Path
    algo: str
    kind: str  # agent | generator | supervised
    env: str | None
    data: str | None
    seed: int
    experiment: str  # runs that differ only by seed share it (W&B group)
    config: dict[str, Any] = field(default_factory=dict)  # the full resolved config.yaml
    resumed: bool = False
    purpose: str = "train"  # train | eval (`lab eval` adds to W&B but not to metrics.jsonl)
    time_offset: float = 0.0  # seconds trained before this process (resumed runs)
    start_step: int = 0  # global_step this process starts from (a resumed run's checkpoint step)
    trackers: tuple[str, ...] | None = None  # the trackers the user named (--trackers); None: every one
    tracker_options: dict[str, Any] = field(default_factory=dict)  # tracker name -> its resolved options

    @property
    def tags(self) -> list[str]:
        """[algo, env or data]: the W&B tags."""
        return [t for t in (self.algo, self.env or self.data) if t]
