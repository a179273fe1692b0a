"""Per-env bookkeeping of whole games, so logs show true scores, never learning rewards."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lab.api import Episode


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

    def state_dict(self) -> dict[str, Any]:
        """Games in progress (finished ones are popped by the runner every step)."""
        return {"returns": torch.from_numpy(self.returns.copy()), "lengths": torch.from_numpy(self.lengths.copy()),
                "finished": [(e.episode_return, e.length) for e in self._finished]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns = state["returns"].numpy().copy()
        self.lengths = state["lengths"].numpy().copy()
        self._finished = [Episode(float(r), int(n)) for r, n in state["finished"]]
