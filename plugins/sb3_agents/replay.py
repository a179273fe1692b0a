"""Use the lab's replay buffer as Stable-Baselines3's `replay_buffer_class`.

    DQN("CnnPolicy", env, replay_buffer_class=SB3ReplayBuffer,
        replay_buffer_kwargs={"frame_stack": 4})

SB3's vector envs reset in the same step an episode ends (the final observation arrives
in `infos[i]["terminal_observation"]`, which SB3 puts in `next_obs`), while the lab's
buffer expects gymnasium's NEXT_STEP stream. The adapter converts: after an env's episode
ends it adds the autoreset step the lab's envs would have produced, carrying the final
observation. Each env gets its own buffer because those extra steps are per env.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer
from stable_baselines3.common.buffers import ReplayBuffer as _SB3ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from lab.api import LabError
from lab.buffers.replay import ReplayBatch, ReplayBuffer


class SB3ReplayBuffer(_SB3ReplayBuffer):
    """SB3's replay-buffer interface over per-env `lab.buffers.ReplayBuffer`s on the device.

    frame_stack: > 1 when observations are channel-first frame stacks (VecFrameStack then
    VecTransposeImage), stored once per frame; stack_padding "zero" is VecFrameStack's.
    n_steps / gamma: n-step returns (SB3's DQN reads `discounts`). handle_timeout_termination:
    time-limit truncations bootstrap, as in SB3.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        frame_stack: int = 1,
        stack_padding: Literal["reset", "zero"] = "zero",
        n_steps: int = 1,
        gamma: float = 0.99,
        seed: int | None = None,
    ) -> None:
        # SB3's own __init__ would allocate its numpy storage; only the base bookkeeping is wanted.
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)  # per env, as in SB3
        if not isinstance(observation_space, spaces.Box):
            raise LabError(f"SB3ReplayBuffer handles Box observations, got {observation_space}")
        self.optimize_memory_usage = False  # frames are stored once anyway
        self.handle_timeout_termination = handle_timeout_termination
        self.n_steps = n_steps
        seed = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.env_generator = torch.Generator().manual_seed(seed + 1)  # which env each sample comes from
        discrete = isinstance(action_space, spaces.Discrete)
        self.buffers = [
            ReplayBuffer(
                self.buffer_size,
                tuple(observation_space.shape),
                1,
                self.device,
                frame_stack=frame_stack,
                action_shape=(self.action_dim,),
                action_dtype=torch.int64 if discrete else torch.float32,
                n_step=n_steps,
                gamma=gamma,
                generator=self.generator,
                observation_dtype=torch.from_numpy(np.zeros(0, observation_space.dtype)).dtype,
                stack_padding=stack_padding,
            )
            for _ in range(n_envs)
        ]

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        action = np.asarray(action).reshape(self.n_envs, self.action_dim)
        for i, buffer in enumerate(self.buffers):
            truncated = bool(done[i]) and self.handle_timeout_termination and bool(infos[i].get("TimeLimit.truncated", False))
            terminated = bool(done[i]) and not truncated
            buffer.add(obs[i : i + 1], action[i : i + 1], np.float32(reward[i]).reshape(1), next_obs[i : i + 1],
                       np.array([terminated]), np.array([truncated]))
            if done[i]:  # the NEXT_STEP autoreset step, carrying the final observation
                buffer.add(next_obs[i : i + 1], action[i : i + 1], np.zeros(1, np.float32), next_obs[i : i + 1],
                           np.array([False]), np.array([False]))
        self.pos = min(self.pos + 1, self.buffer_size)
        self.full = self.pos == self.buffer_size

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:  # type: ignore[override]
        if env is not None:
            raise LabError("SB3ReplayBuffer does not support VecNormalize; store normalised observations instead")
        if self.n_envs == 1:
            batch = self.buffers[0].sample(batch_size)
        else:
            counts = torch.tensor([b.num_sampleable() for b in self.buffers], dtype=torch.float64)
            if counts.sum() == 0:
                raise LabError("cannot sample: no complete transition stored yet")
            choice = torch.multinomial(counts, batch_size, replacement=True, generator=self.env_generator)
            sizes = torch.bincount(choice, minlength=self.n_envs).tolist()
            parts = [b.sample(k) for b, k in zip(self.buffers, sizes, strict=True) if k > 0]
            batch = ReplayBatch(*(torch.cat(fields) for fields in zip(*parts, strict=True)))
        return ReplayBufferSamples(
            observations=batch.observations,
            actions=batch.actions,
            next_observations=batch.next_observations,
            dones=batch.dones.unsqueeze(1),
            rewards=batch.rewards.unsqueeze(1),
            discounts=batch.discounts.unsqueeze(1) if self.n_steps > 1 else None,
        )

    def state_dict(self) -> dict[str, Any]:
        """Contents of every env's buffer plus SB3's size bookkeeping (torch.load weights_only safe)."""
        return {"buffers": [b.state_dict() for b in self.buffers], "pos": int(self.pos), "full": bool(self.full),
                "generator": self.generator.get_state(), "env_generator": self.env_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], end_episodes: bool = True) -> None:
        """Restore `state_dict()`; open episodes are closed since the envs restart on resume."""
        if len(state["buffers"]) != self.n_envs:
            raise LabError(f"the checkpoint's replay buffer has {len(state['buffers'])} envs, this run {self.n_envs}; "
                           "resume with the same number of envs")
        for buffer, saved in zip(self.buffers, state["buffers"], strict=True):
            buffer.load_state_dict(saved, end_episodes=end_episodes)
        self.pos, self.full = int(state["pos"]), bool(state["full"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
            self.env_generator.set_state(state["env_generator"])
