"""The lab's env factory seen as a Stable-Baselines3 `VecEnv`.

SB3 resets an env in the same step its episode ends (final observation in
`infos[i]["terminal_observation"]`); the lab's envs follow NEXT_STEP. The adapter runs one
single-env lab VecEnv per SB3 env and, when one ends, plays its autoreset step at once
(the action is ignored there) to get the first observation of the next episode. Episode
scores still reach the runner through each lab env's `pop_episodes()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv as SB3VecEnv

from lab.api import VecEnv


class LabSB3VecEnv(SB3VecEnv):
    def __init__(self, envs: Sequence[VecEnv]) -> None:
        if any(env.num_envs != 1 for env in envs):
            raise ValueError("LabSB3VecEnv takes single-env lab VecEnvs")
        self.envs = list(envs)
        first = self.envs[0]
        super().__init__(len(self.envs), first.single_observation_space, first.single_action_space)
        self._actions: np.ndarray | None = None
        self._next_seeds: list[int | None] = [None] * len(self.envs)  # not SB3's `_seeds`: this class resets itself

    @staticmethod
    def _numpy(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    def reset(self) -> np.ndarray:
        obs = [self._numpy(env.reset(seed=seed))[0] for env, seed in zip(self.envs, self._next_seeds, strict=True)]
        self._next_seeds = [None] * len(self.envs)
        return np.stack(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        assert self._actions is not None, "step_async first"
        observations, rewards, dones, infos = [], [], [], []
        for env, action in zip(self.envs, self._actions, strict=True):
            action_t = torch.as_tensor(action, device=env.device).unsqueeze(0)
            obs, reward, terminated, truncated, _ = env.step(action_t)
            term, trunc = bool(terminated[0]), bool(truncated[0])
            info: dict[str, Any] = {}
            if term or trunc:
                info["terminal_observation"] = self._numpy(obs)[0]
                info["TimeLimit.truncated"] = trunc and not term
                obs = env.step(action_t)[0]  # NEXT_STEP autoreset: first obs of the next episode
            observations.append(self._numpy(obs)[0])
            rewards.append(float(reward[0]))
            dones.append(term or trunc)
            infos.append(info)
        self._actions = None
        return np.stack(observations), np.array(rewards, np.float32), np.array(dones), infos

    def current_observations(self) -> np.ndarray:
        """What each env shows now (`TrainingEnv.obs`): what SB3 continues from after a resume."""
        return np.stack([self._numpy(env.obs)[0] for env in self.envs])

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds for the next reset (SB3 calls this from `set_random_seed`)."""
        if seed is not None:
            self._next_seeds = [seed + i for i in range(len(self.envs))]
        return list(self._next_seeds)

    def env_indices(self, indices: Any = None) -> Iterable[int]:
        """The envs an accessor addresses: all (None), one (an int) or the ones listed, as SB3's
        `VecEnvIndices` means (SB3's own helper for this, `_get_indices`, is private)."""
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices

    # SB3's generic accessors: the lab envs are not gym.Envs, so expose what exists.
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        if attr_name == "render_mode":  # lab envs render on request (render=True), never to a screen
            return [None for _ in self.env_indices(indices)]
        return [getattr(self.envs[i], attr_name) for i in self.env_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for i in self.env_indices(indices):
            setattr(self.envs[i], attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [getattr(self.envs[i], method_name)(*args, **kwargs) for i in self.env_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self.env_indices(indices)]
