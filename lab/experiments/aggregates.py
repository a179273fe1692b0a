"""Aggregates that hold with few seeds (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice"), for `lab compare`.

- Final scores per group: the interquartile mean (IQM: the mean of the middle 50% of runs,
  robust to one lucky or unlucky seed), mean and median, each with a 95% stratified
  bootstrap confidence interval over runs (rliable's estimator: runs are resampled within
  each task).
- Bands along the curve: the 95% percentile bootstrap interval of the mean (or IQM) over
  runs at each step. A percentile interval of a mean stays inside what the runs scored, so
  three CartPole seeds never draw a band below 0 or above 500 (a t-interval does).
- Performance profiles: the fraction of runs whose (normalised) score exceeds each
  threshold, across tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import trim_mean

CONFIDENCE = 0.95
BOOTSTRAP_REPS = 2000


def iqm(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """The interquartile mean: the mean after cutting the lowest and highest 25%."""
    return trim_mean(values, 0.25, axis=axis)


ESTIMATORS: dict[str, Callable[..., np.ndarray]] = {"mean": np.mean, "iqm": iqm, "median": np.median}


def bootstrap_band(runs: np.ndarray, estimator: str = "mean", reps: int = BOOTSTRAP_REPS,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) at each point of `runs` (n_runs, n_points): the estimator over
    runs and its 95% percentile bootstrap interval (runs resampled with replacement)."""
    estimate = ESTIMATORS[estimator](runs, axis=0)
    n = runs.shape[0]
    if n < 2:
        return estimate, estimate.copy(), estimate.copy()
    picks = np.random.default_rng(seed).integers(0, n, size=(reps, n))
    resampled = ESTIMATORS[estimator](runs[picks], axis=1)  # (reps, n_points)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0)
    return estimate, low, high


def final_intervals(scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS,
                    seed: int = 0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{group: {"iqm" | "mean" | "median": (estimate, low, high)}} for `scores` {group:
    (n_runs, n_tasks)}, with rliable's stratified bootstrap (95%)."""
    from rliable import library as rly
    from rliable import metrics

    def aggregates(x: np.ndarray) -> np.ndarray:
        # the median of every run's score: rliable's aggregate_median is the median of the
        # tasks' means, which for one task is the mean
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), np.median(x)])

    np.random.seed(seed)  # rliable draws from numpy's global generator: the same table every time
    estimates, intervals = rly.get_interval_estimates(scores, aggregates, reps=reps, confidence_interval_size=CONFIDENCE)
    return {group: {name: (float(estimates[group][i]), float(intervals[group][0, i]), float(intervals[group][1, i]))
                    for i, name in enumerate(("iqm", "mean", "median"))} for group in scores}


def performance_profile(scores: dict[str, np.ndarray], thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """{group: fraction of its runs (over all tasks) whose score exceeds each threshold}."""
    return {group: (values.reshape(-1, 1) > thresholds.reshape(1, -1)).mean(0) for group, values in scores.items()}
