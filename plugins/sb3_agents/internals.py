"""The one place `sb3_agents` touches Stable-Baselines3's private members (checked on SB3 2.9.2).

The runner drives SB3's `learn` loop one iteration per `train_step` and checkpoints what
that loop carries between iterations. SB3's public API runs `learn` only as a whole and
saves a model only as a zip (`save`/`load`, which leave out the loop's counters, last
observations and episode starts), so these few members have no public equivalent. Each
function below names the member it reads or writes and why; when SB3 changes, fix here.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback


def setup_learn(model: BaseAlgorithm, total_timesteps: int, callback: BaseCallback | None = None) -> BaseCallback:
    """`_setup_learn`: what `learn` does before its loop (counters, first reset, callback);
    public `learn` would also run the loop to the end."""
    _, callback = model._setup_learn(total_timesteps, callback=callback, reset_num_timesteps=True)
    return callback


def total_timesteps(model: BaseAlgorithm) -> int:
    """`_total_timesteps`: the schedules' horizon (progress remaining), set only by `learn`."""
    return int(model._total_timesteps)


def set_total_timesteps(model: BaseAlgorithm, value: int) -> None:
    """`_total_timesteps`: a resumed run keeps its horizon, not the new budget."""
    model._total_timesteps = value


def update_progress_remaining(model: BaseAlgorithm) -> None:
    """`_update_current_progress_remaining`: the on-policy `learn` loop calls it between a
    rollout and its update (the off-policy `collect_rollouts` calls it itself)."""
    model._update_current_progress_remaining(model.num_timesteps, total_timesteps(model))


def progress_remaining(model: BaseAlgorithm) -> float:
    """`_current_progress_remaining`: what SB3's schedules (DQN's exploration rate) read."""
    return float(model._current_progress_remaining)


def n_updates(model: BaseAlgorithm) -> int:
    """`_n_updates`: gradient updates so far (TD3's policy delay counts them); no public reader."""
    return int(model._n_updates)


def set_n_updates(model: BaseAlgorithm, value: int) -> None:
    """`_n_updates`: restored on resume so TD3 delays its policy updates on the same steps."""
    model._n_updates = value


def n_calls(model: BaseAlgorithm) -> int:
    """`_n_calls`: DQN's target-network clock (0 for the algorithms without one)."""
    return int(getattr(model, "_n_calls", 0))


def set_n_calls(model: BaseAlgorithm, value: int) -> None:
    """`_n_calls`: restored on resume so DQN updates its target network on the same steps."""
    if hasattr(model, "_n_calls"):
        model._n_calls = value


def episode_num(model: BaseAlgorithm) -> int:
    """`_episode_num`: episodes finished (SB3 logs it as `time/episodes`); no public reader."""
    return int(model._episode_num)


def set_episode_num(model: BaseAlgorithm, value: int) -> None:
    """`_episode_num`: restored on resume."""
    model._episode_num = value


def last_obs(model: BaseAlgorithm) -> np.ndarray:
    """`_last_obs`: the observations the next rollout starts from, as the policy sees them."""
    return model._last_obs


def set_last_obs(model: BaseAlgorithm, obs: np.ndarray) -> None:
    """`_last_obs`: after a resume SB3 continues from the restored envs' observations
    (`set_env` can only clear it, which makes `learn` reset the envs)."""
    model._last_obs = obs


def last_episode_starts(model: BaseAlgorithm) -> np.ndarray:
    """`_last_episode_starts`: which envs begin an episode at the next step (on-policy GAE)."""
    return np.asarray(model._last_episode_starts, dtype=bool)


def set_last_episode_starts(model: BaseAlgorithm, starts: np.ndarray) -> None:
    """`_last_episode_starts`: restored on resume, with envs that restarted marked as starting."""
    model._last_episode_starts = starts
