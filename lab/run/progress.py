"""What a run prints: a one-line progress bar (80 columns) on a terminal, plain lines
elsewhere (CI, files), and a short report when the run ends.

The ETA comes from the recent rate (an exponential average over half-second windows),
not from the whole run, since a resumed run starts part-way. An off-policy warm-up collects
many times faster than learning: the algorithm's `pace()` says from which step the steps get
slower and by how much (timed on its own networks), so the ETA counts the learning phase at
its speed from the start, and the average starts afresh when that phase begins.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from lab.api import Pace, RunStatus
from lab.run.checkpoint import checkpoint_step
from lab.run.events import Observer
from lab.run.rundir import train_again

WIDTH = 80
PLAIN_EVERY_S = 10.0
RATE_WINDOW_S = 0.5
RATE_SMOOTHING = 0.1  # weight of the newest window in the average rate


class BarFields(TypedDict):
    """The bar's own columns (`task.fields`), typed so they pass as keywords to rich."""

    count: str
    speed: str
    eta: str


def compact(number: float) -> str:
    """12345 -> '12.3k', 10_000_000 -> '10M' (at most 5 characters for counts)."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            text = f"{number / size:.1f}".rstrip("0").rstrip(".")
            return text + suffix
    return f"{number:.0f}"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def headline(values: dict[str, Any], key_metric: str, width: int) -> str:
    """The latest training score and evaluation, shortened to `width` characters."""
    parts = []
    for label, key in (("return", "train/episode_return"), (key_metric.split("/")[-1], key_metric),
                       ("loss", "train/loss")):
        value = values.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.4g}")
    text = "  ".join(parts)
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class RunProgress:
    def __init__(self, description: str, total: int, start: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.total = total
        self.rate: float | None = None
        self.pace: Pace | None = None
        self._window_time = time.perf_counter()
        self._window_step = start
        self._bar: Progress | None = None
        self._last_line = 0.0  # plain mode prints at most one line per PLAIN_EVERY_S
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=12),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[speed]}"),
                TextColumn("{task.fields[eta]}"),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                expand=False,
            )
            self._task = self._bar.add_task(description[:10], total=total, completed=start, info="",
                                            **self._fields(start))
            self._bar.start()

    def eta(self, step: int) -> float | None:
        """Seconds left: the steps before a slower phase at the recent rate, those after it
        at the recent rate plus the phase's extra seconds per step."""
        if not self.rate:
            return None
        if self.pace is None or step >= self.pace.starts:
            return (self.total - step) / self.rate
        now = min(self.total, self.pace.starts) - step
        return now / self.rate + (self.total - step - now) * (1 / self.rate + self.pace.extra_s)

    def _fields(self, step: int) -> BarFields:
        eta = self.eta(step)
        speed = f"{compact(self.rate)}/s" if self.rate else "-/s"
        return BarFields(count=f"{compact(step)}/{compact(self.total)}", speed=f"{speed:>7}", eta=f"ETA {duration(eta)}")

    def update(self, step: int, pace: Pace | None = None) -> None:
        now = time.perf_counter()
        if self.pace is not None and step >= self.pace.starts > self._window_step:
            self.rate, self._window_time, self._window_step = None, now, step  # the slower phase began
        self.pace = pace or self.pace
        if now - self._window_time >= RATE_WINDOW_S:
            recent = (step - self._window_step) / (now - self._window_time)
            self.rate = recent if self.rate is None else (1 - RATE_SMOOTHING) * self.rate + RATE_SMOOTHING * recent
            self._window_time, self._window_step = now, step
        if self._bar is not None:
            self._bar.update(self._task, completed=step, **self._fields(step))

    def note(self, step: int, values: dict[str, Any], key_metric: str) -> None:
        """Show the latest headline metrics (on the bar, or as one plain line)."""
        if self._bar is not None:  # columns are separated by one space; leave the last column free
            fields = self._fields(step)
            columns = (fields["count"], fields["speed"], fields["eta"])
            used = 10 + 12 + sum(map(len, columns)) + len(columns) + 2
            self._bar.update(self._task, info=headline(values, key_metric, WIDTH - used - 1))
        elif time.perf_counter() - self._last_line >= PLAIN_EVERY_S:  # the end has its own report
            self._last_line = time.perf_counter()
            every = "  ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, (int, float)))
            print(f"step {step}/{self.total}  {every}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class ProgressDisplay(Observer):
    """The run as the person who started it sees it: the progress bar while it trains, then
    what went wrong (if anything) and the report."""

    def __init__(self, algo: str, target: str | None, run_dir: Path, next_command: str, total: int,
                 start: int, key_metric: str) -> None:
        self.algo, self.target, self.run_dir, self.next_command = algo, target, run_dir, next_command
        self.key_metric = key_metric
        self.bar = RunProgress(algo, total, start)
        self.values: dict[str, Any] = {}  # as logged: a NaN stays a NaN, so the report shows it
        self.warned_key_metric = False

    def logged(self, metrics: dict[str, Any], step: int) -> None:
        self.values.update(metrics)

    def stepped(self, step: int, pace: Pace | None) -> None:
        self.bar.update(step, pace)

    def row(self, step: int, row: dict[str, float]) -> None:
        self.bar.note(step, self.values, self.key_metric)

    def evaluated(self, step: int, metrics: dict[str, Any], key_metric: str) -> None:
        if key_metric not in metrics and not self.warned_key_metric:
            self.warned_key_metric = True
            print(f"note: {self.algo}.evaluate() returned no '{key_metric}' (its key_metric), so no best.pt is "
                  f"kept; it returned {', '.join(sorted(metrics)) or 'nothing'} (set key_metric to one of them)",
                  file=sys.stderr)
        self.bar.note(step, self.values, key_metric)

    def ended(self, status: RunStatus, summary: dict[str, Any], message: str | None) -> None:
        self.bar.close()
        if message:
            print(message, file=sys.stderr, end="" if message.endswith("\n") else "\n")
        print(run_report(self.algo, self.target, self.run_dir, {**summary, **self.values}, self.next_command),
              file=sys.stderr)


def run_report(algo: str, target: str | None, run_dir: Path, summary: dict[str, Any], next_command: str) -> str:
    """The few lines that end every run: how it ended, the final and best evaluation,
    every metric's last value, where it is, and the command to type next."""
    status, step = summary.get("status"), summary.get("global_step", 0)
    key = summary.get("key_metric")
    lines = [f"{status}: {algo} on {target} at step {step:,} after {duration(summary.get('elapsed_s'))}"]
    final, best = summary.get(key) if key is not None else None, summary.get("best")
    if isinstance(final, (int, float)):
        best_text = f", best {best:.4g} at step {summary.get('best_step'):,}" if isinstance(best, (int, float)) \
            and summary.get("best_step") is not None else ""
        lines.append(f"  {key}: final {final:.4g}{best_text}")
    others = [f"{k} {v:.4g}" for k, v in summary.items()
              if "/" in k and k != key and isinstance(v, (int, float)) and not isinstance(v, bool)]
    if others:
        lines.append("  last: " + ", ".join(others))
    lines.append(f"  run: {run_dir}")
    if not (run_dir / "checkpoints" / "latest.pt").is_file():
        lines.append(f"  next: no checkpoint was saved, so nothing can resume it: {train_again(run_dir)}")
    elif status == RunStatus.INTERRUPTED:
        saved = checkpoint_step(run_dir)
        lines.append(f"  next: lab resume {run_dir}" + ("" if saved is None else f" (continues from step {saved:,}" + (
            ", the last checkpoint: the steps after it are trained again)" if saved < step else ")")))
    elif status == RunStatus.FINISHED:
        lines.append(f"  next: {next_command}")
    elif status == RunStatus.PRUNED:
        lines.append(f"  next: the sweep stopped this trial early; `lab resume {run_dir}` trains it on")
    else:
        lines.append(f"  next: fix the error above, then `lab resume {run_dir}`")
    return "\n".join(lines)
