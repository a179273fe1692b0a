"""Shared buffers that live on the training device: replay, rollout and whole-dataset loaders.

The Stable-Baselines3 adapter of the replay buffer lives with the SB3 agents (`lab.plugins.sb3_agents.replay`).
"""

from lab.buffers.data import DataBatch, DataBuffer
from lab.buffers.replay import ReplayBatch, ReplayBuffer
from lab.buffers.rollout import RolloutBatch, RolloutBuffer

__all__ = ["DataBatch", "DataBuffer", "ReplayBatch", "ReplayBuffer", "RolloutBatch", "RolloutBuffer"]
