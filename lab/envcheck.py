"""Check that an env factory keeps the lab's `VecEnv` contract, like gymnasium's `check_env`.

Plugin authors can call `check_env_factory(factory, env_id)` from their own tests; the
lab's tests run it against every registered factory. Random actions are played on a
training env and on an evaluation env, and every step is checked:
- observations, rewards and flags have the declared shapes and dtypes, on the device;
- no done is reported on an autoreset step (the step after a done);
- the true-score episodes of the evaluation env (unclipped rewards, whole games) equal
  the sum of the rewards it returned, and episode lengths count the real steps only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lab.api import VecEnv


class EnvContractError(AssertionError):
    """An env broke the lab's VecEnv contract (the message says where)."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise EnvContractError(message)


def random_actions(space: gym.Space, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`n` random actions of a Discrete or Box space (unbounded Box dimensions drawn in [-1, 1])."""
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(int(space.start), int(space.start + space.n), (n,), generator=generator).to(device)
    low = torch.as_tensor(np.nan_to_num(space.low, neginf=-1.0), dtype=torch.float32)
    high = torch.as_tensor(np.nan_to_num(space.high, posinf=1.0), dtype=torch.float32)
    return (low + (high - low) * torch.rand((n, *space.shape), generator=generator)).to(device)


def check_steps(env: VecEnv, steps: int, seed: int = 0, name: str = "env") -> list[tuple[float, int]]:
    """Play `steps` random vector steps and check each; returns the episodes the env's
    rewards add up to, as (return, length), for comparison with `pop_episodes`."""
    n = env.num_envs
    gen = torch.Generator().manual_seed(seed)
    obs_space = env.single_observation_space
    obs = env.reset(seed=seed)
    _expect(tuple(obs.shape) == (n, *obs_space.shape), f"{name}: reset() returned shape {tuple(obs.shape)}, "
            f"expected {(n, *obs_space.shape)}")
    _expect(obs.device.type == torch.device(env.device).type, f"{name}: observations on {obs.device}, env on {env.device}")
    autoreset = np.zeros(n, dtype=bool)
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    episodes: list[tuple[float, int]] = []
    for t in range(steps):
        obs, reward, terminated, truncated, info = env.step(random_actions(env.single_action_space, n, gen, env.device))
        where = f"{name} step {t}"
        _expect(tuple(obs.shape) == (n, *obs_space.shape), f"{where}: observation shape {tuple(obs.shape)}")
        _expect(obs.dtype == torch.float32 or obs.dtype == torch.uint8 or not obs.is_floating_point(),
                f"{where}: floating observations must be float32, got {obs.dtype}")
        _expect(reward.dtype == torch.float32 and tuple(reward.shape) == (n,), f"{where}: reward must be float32 "
                f"of shape ({n},), got {reward.dtype} {tuple(reward.shape)}")
        for flag, value in (("terminated", terminated), ("truncated", truncated)):
            _expect(value.dtype == torch.bool and tuple(value.shape) == (n,), f"{where}: {flag} must be bool of "
                    f"shape ({n},), got {value.dtype} {tuple(value.shape)}")
        _expect(isinstance(info, dict), f"{where}: info must be a dict")
        done = (terminated | truncated).cpu().numpy()
        reward_np = reward.double().cpu().numpy()
        bad = np.flatnonzero(done & autoreset)
        _expect(bad.size == 0, f"{where}: env {bad.tolist()} reported a done on an autoreset step")
        _expect(not np.any(reward_np[autoreset]), f"{where}: an autoreset step paid a reward")
        returns += np.where(autoreset, 0.0, reward_np)
        lengths += ~autoreset
        for i in np.flatnonzero(done):
            episodes.append((float(returns[i]), int(lengths[i])))
            returns[i], lengths[i] = 0.0, 0
        autoreset = done
    return episodes


def check_env_factory(factory: Callable[..., Any], env_id: str, steps: int = 400, num_envs: int = 2) -> None:
    """Raise `EnvContractError` if `factory` makes a `env_id` that breaks the contract."""
    device = torch.device("cpu")
    for evaluation in (False, True):
        kind = "evaluation env" if evaluation else "training env"
        env = factory(env_id, num_envs=num_envs, seed=0, device=device, evaluation=evaluation)
        try:
            for attr in ("num_envs", "single_observation_space", "single_action_space", "device"):
                _expect(hasattr(env, attr), f"{env_id} {kind} has no `{attr}`")
            _expect(env.num_envs == num_envs, f"{env_id} {kind}: num_envs {env.num_envs}, asked for {num_envs}")
            episodes = check_steps(env, steps, name=f"{env_id} {kind}")
            reported = [(e.episode_return, e.length) for e in env.pop_episodes()]
            if evaluation:  # unclipped rewards and whole games: the rewards are the true score
                _expect(len(reported) == len(episodes) and np.allclose(reported, episodes) if episodes else not reported,
                        f"{env_id} {kind}: pop_episodes() {reported[:3]}... differ from the summed rewards "
                        f"{episodes[:3]}...")
            else:  # clipped rewards or life-loss ends may differ; whole games never outnumber learning episodes
                _expect(len(reported) <= len(episodes),
                        f"{env_id} {kind}: {len(reported)} games reported but only {len(episodes)} episodes ended")
                _expect(all(length > 0 for _, length in reported), f"{env_id} {kind}: an episode of length 0")
        finally:
            env.close()
