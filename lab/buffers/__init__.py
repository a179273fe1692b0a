"""Shared buffers that live on the training device: replay, rollout and whole-dataset loaders.

The Stable-Baselines3 adapter is in `lab.buffers.sb3` (imported on demand).
"""

from lab.buffers.data import DataBatch, DataBuffer
from lab.buffers.replay import ReplayBatch, ReplayBuffer
from lab.buffers.rollout import RolloutBatch, RolloutBuffer

__all__ = ["DataBatch", "DataBuffer", "ReplayBatch", "ReplayBuffer", "RolloutBatch", "RolloutBuffer"]
