"""Schedules of a value over training steps (learning rate, epsilon, clip range, entropy,
PER beta) that hold their end values outside their points.

A schedule is a function of the step, not of "progress remaining": extending a run past
its budget (`lab resume --steps N`) keeps the final value instead of extrapolating the
line (SB3's progress-based schedules go negative there). Keep the horizon a schedule was
built with in the algorithm's state, so a resumed run never restarts it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PiecewiseLinear:
    """Linear between (step, value) points, constant before the first and after the last."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a schedule needs at least one (step, value) point")
        steps = [s for s, _ in self.points]
        if steps != sorted(steps):
            raise ValueError(f"schedule steps must be increasing, got {steps}")

    def __call__(self, step: float) -> float:
        steps = [s for s, _ in self.points]
        i = bisect_right(steps, step)
        if i == 0:
            return float(self.points[0][1])
        if i == len(self.points):
            return float(self.points[-1][1])
        (s0, v0), (s1, v1) = self.points[i - 1], self.points[i]
        return float(v0 + (step - s0) / (s1 - s0) * (v1 - v0))


def constant(value: float) -> PiecewiseLinear:
    """`value` at every step."""
    return PiecewiseLinear(((0.0, value),))


def linear(start: float, end: float, duration: float, begin: float = 0.0) -> PiecewiseLinear:
    """`start` at step `begin`, `end` at `begin + duration` and after (`end` throughout if duration <= 0)."""
    if duration <= 0:
        return constant(end)
    return PiecewiseLinear(((begin, start), (begin + duration, end)))


def warmup_decay(peak: float, horizon: int, warmup: float, final: float = 0.0) -> PiecewiseLinear:
    """Warm up linearly over `warmup * horizon` steps (step s gets (s + 1) / warm of the peak,
    so the first step already moves), then decay linearly to `final` at `horizon`."""
    warm = int(warmup * horizon)
    points: Sequence[tuple[float, float]] = (
        ((-1, 0.0), (warm - 1, peak), (warm, peak), (horizon, final)) if warm > 0 else ((0, peak), (horizon, final))
    )
    return PiecewiseLinear(tuple(points))


def anneal(value: float, horizon: int, enabled: bool) -> PiecewiseLinear:
    """RL Zoo's `lin_<value>`: linear from `value` to 0 over the run, or constant."""
    return linear(value, 0.0, horizon) if enabled else constant(value)


def as_progress_schedule(schedule: Callable[[float], float], horizon: int) -> Callable[[float], float]:
    """The same schedule in SB3's terms, a function of progress_remaining = 1 - step/horizon."""
    return lambda progress_remaining: schedule((1.0 - progress_remaining) * horizon)
