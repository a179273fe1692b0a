"""Moved to `lab.api.envs` (import from `lab.api`); this module stays so that plugins written
for arcade-lab 0.1 import unchanged."""

from lab.api.envs import EnvFamily, Episode, TrainingEnv, VecEnv

__all__ = ["EnvFamily", "Episode", "TrainingEnv", "VecEnv"]
