"""The Atari frame stack, kept on the training device so each frame crosses to it once."""

from __future__ import annotations

import torch


class FrameStack:
    """The last `k` frames of each env; after an episode start the stack is padded by
    repeating the first frame (gymnasium FrameStackObservation padding_type="reset"),
    the same rule the replay buffer uses to rebuild stacks."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"frame stack must be >= 1, got {k}")
        self.k = k
        self.stack: torch.Tensor | None = None

    def reset(self, frames: torch.Tensor) -> torch.Tensor:
        """Start every env from `frames` (num_envs, H, W)."""
        self.stack = frames.unsqueeze(1).repeat(1, self.k, 1, 1)
        return self.stack

    def push(self, frames: torch.Tensor, starts: torch.Tensor | None = None) -> torch.Tensor:
        """Append `frames`; envs flagged in `starts` (bool, num_envs) begin a new episode.

        Returns a new tensor each call, so callers may keep earlier observations.
        """
        if self.stack is None:
            raise RuntimeError("FrameStack.push before reset")
        stacked = torch.cat((self.stack[:, 1:], frames.unsqueeze(1)), dim=1)
        if starts is not None:
            padded = frames.unsqueeze(1).expand_as(stacked)
            stacked = torch.where(starts.view(-1, 1, 1, 1), padded, stacked)
        self.stack = stacked
        return stacked
