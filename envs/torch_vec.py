"""A gymnasium vector env seen through the lab's torch `VecEnv` contract.

Used for every gymnasium id with flat observations: numpy in, torch tensors on the
training device out, NEXT_STEP autoreset, true episode scores, and checkpoint state when
the simulator's state can be captured (`lab.envs.snapshot`), so a resumed run plays on.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lab.api import Episode
from lab.envs.episodes import EpisodeStats
from lab.envs.snapshot import Unsaveable, restore, snapshot


def actions_to_numpy(actions: torch.Tensor, space: gym.Space, num_envs: int) -> np.ndarray:
    """Convert agent actions to what the simulator expects for `space`."""
    array = actions.detach().cpu().numpy()
    if isinstance(space, gym.spaces.Discrete):
        return array.astype(np.int64).reshape(num_envs)
    return array.astype(space.dtype).reshape((num_envs, *space.shape))


def obs_to_tensor(obs: np.ndarray, device: torch.device) -> torch.Tensor:
    """Floating observations become float32 (what networks eat); integer ones keep their dtype."""
    tensor = torch.from_numpy(np.asarray(obs))
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.to(device)


class GymTorchVecEnv:
    """Wraps a gymnasium `VectorEnv` created with NEXT_STEP autoreset."""

    def __init__(self, env: gym.vector.VectorEnv, device: torch.device, seed: int, render_fps: int = 30) -> None:
        mode = env.metadata.get("autoreset_mode")
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"GymTorchVecEnv needs NEXT_STEP autoreset, got {mode}")
        self.env = env
        self.num_envs = env.num_envs
        self.device = torch.device(device)
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.render_fps = int(env.metadata.get("render_fps") or render_fps)
        self._seed: int | None = seed
        self._stats = EpisodeStats(self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        env.action_space.seed(seed)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset all envs; the first reset uses the factory's seed."""
        if seed is None:
            seed, self._seed = self._seed, None
        obs = self._reset_simulator(seed)
        self._stats.reset()
        self._autoreset[:] = False
        return obs_to_tensor(obs, self.device)

    def _reset_simulator(self, seed: int | None) -> np.ndarray:
        """Reset every env of the vector env (seeded when `seed` is given); its observations."""
        obs, _ = self.env.reset(seed=seed)
        return obs

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(
            actions_to_numpy(actions, self.single_action_space, self.num_envs)
        )
        done = terminated | truncated
        self._stats.update(rewards, ~self._autoreset, done)
        self._autoreset = done
        return (
            obs_to_tensor(obs, self.device),
            torch.as_tensor(rewards, dtype=torch.float32, device=self.device),
            torch.as_tensor(terminated, dtype=torch.bool, device=self.device),
            torch.as_tensor(truncated, dtype=torch.bool, device=self.device),
            info,
        )

    def pop_episodes(self) -> list[Episode]:
        return self._stats.pop()

    def state_dict(self) -> dict[str, Any] | None:
        """Everything needed to continue the episodes in progress; None when the simulator's
        state cannot be captured (e.g. a Box2D world): the runner then restarts the env."""
        try:
            simulator = snapshot(self.env)
        except Unsaveable:
            return None
        return {"simulator": simulator, "autoreset": torch.from_numpy(self._autoreset.copy()),
                "episodes": self._stats.state_dict(), "first_seed": self._seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore(self.env, state["simulator"])
        self._autoreset = state["autoreset"].numpy().copy()
        self._stats.load_state_dict(state["episodes"])
        self._seed = state["first_seed"]

    def render(self) -> np.ndarray:
        """RGB uint8 frame of env 0 (the env must be made with render=True)."""
        frames = self.env.render()
        if frames is None:
            raise RuntimeError("this env was not made with render=True")
        return np.asarray(frames[0], dtype=np.uint8)

    def close(self) -> None:
        self.env.close()
