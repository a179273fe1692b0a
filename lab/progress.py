"""A progress bar with steps/s and ETA on a terminal; plain log lines elsewhere (CI, files)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


PLAIN_EVERY_S = 10.0


class RunProgress:
    def __init__(self, description: str, total: int, start: int) -> None:
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.total = total
        self._last_time = time.perf_counter()
        self._last_step = start
        self._sps = 0.0
        self._bar: Progress | None = None
        self._last_line = 0.0  # plain mode prints at most one line per PLAIN_EVERY_S
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("{task.fields[sps]:>8.0f} steps/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )
            self._task = self._bar.add_task(description, total=total, completed=start, sps=0.0, info="")
            self._bar.start()

    def update(self, step: int) -> None:
        now = time.perf_counter()
        if now - self._last_time >= 0.5:
            self._sps = (step - self._last_step) / (now - self._last_time)
            self._last_time, self._last_step = now, step
        if self._bar is not None:
            self._bar.update(self._task, completed=step, sps=self._sps)

    def note(self, step: int, metrics: dict[str, float]) -> None:
        """Show the latest headline metrics (on the bar, or as one plain line)."""
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
        if self._bar is not None:  # the bar already shows steps/s; keep the line short
            short = "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in metrics.items()
                              if isinstance(v, (int, float)) and k != "perf/sps")
            self._bar.update(self._task, info=short)
        elif time.perf_counter() - self._last_line >= PLAIN_EVERY_S or step >= self.total:
            self._last_line = time.perf_counter()
            print(f"step {step}/{self.total}  {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
