"""Per-env bookkeeping of whole games, so logs show true scores, never learning rewards."""

from __future__ import annotations

import numpy as np

from lab.vecenv import Episode


class EpisodeStats:
    """Accumulates each env's true return and length; finished games queue up for `pop`."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self._finished: list[Episode] = []

    def reset(self) -> None:
        """Forget games in progress (a full reset starts new ones)."""
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def update(self, rewards: np.ndarray, counted: np.ndarray, finished: np.ndarray) -> None:
        """Add one vector step.

        rewards:  the true (unclipped) reward of this step.
        counted:  which envs took a game step (False on an autoreset step).
        finished: which envs ended their game on this step.
        """
        self.returns += np.where(counted, rewards, 0.0)
        self.lengths += counted
        for i in np.flatnonzero(finished):
            self._finished.append(Episode(float(self.returns[i]), int(self.lengths[i])))
            self.returns[i] = 0.0
            self.lengths[i] = 0

    def pop(self) -> list[Episode]:
        """Games finished since the last call, oldest first."""
        finished, self._finished = self._finished, []
        return finished
