"""`Corridor-v0`: an env family of one toy env, with a setting of its own and reference scores.

Walk right (action 1) from cell 0 to the last cell of a corridor for a reward of 1; an
episode is cut after 4 x length steps. The family's setting `--corridor-length` becomes a
flag of every run on its envs; its reference scores give `eval/normalized_score`.

    lab train random --env Corridor-v0 --corridor-length 8 --plugins-dir docs/examples
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lab.api import EnvFamily, Episode, LabError, check_ranges, hookimpl, option


@dataclass
class CorridorOptions:
    corridor_length: int = option(5, "cells from the start to the goal")  # --corridor-length

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("corridor_length",))


# (score of never reaching the goal, best score): the normalised score is the success rate
CORRIDOR = EnvFamily("corridor", options=CorridorOptions, reference_scores=lambda env_id: (0.0, 1.0))


class Corridor:
    """`num_envs` corridors stepped together as torch tensors (the `lab.api.VecEnv` contract)."""

    def __init__(self, num_envs: int, length: int, device: torch.device) -> None:
        self.num_envs, self.length, self.device = num_envs, length, torch.device(device)
        self.single_observation_space = gym.spaces.Box(0.0, float(length), (1,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.position = torch.zeros(num_envs, device=self.device)
        self.steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.after_done = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self.finished: list[Episode] = []

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self.position.zero_(), self.steps.zero_(), self.after_done.zero_()  # no randomness: seed unused
        return self.position.unsqueeze(1).clone()

    def step(self, actions: torch.Tensor):
        moving = ~self.after_done  # the step after a done only resets (gymnasium's NEXT_STEP autoreset)
        moved = (self.position + actions.float() * 2 - 1).clamp(0, self.length)
        self.position = torch.where(moving, moved, 0.0)
        self.steps = torch.where(moving, self.steps + 1, 0)
        terminated = moving & (self.position == self.length)
        truncated = moving & ~terminated & (self.steps >= 4 * self.length)
        reward = terminated.float()
        for i in (terminated | truncated).nonzero().flatten().tolist():
            self.finished.append(Episode(float(reward[i]), int(self.steps[i])))  # the true score
        self.after_done = terminated | truncated
        return self.position.unsqueeze(1).clone(), reward, terminated, truncated, {}

    def pop_episodes(self) -> list[Episode]:
        done, self.finished = self.finished, []
        return done

    def state_dict(self) -> dict[str, Any]:  # optional: lets a resumed run continue the episodes
        return {"position": self.position, "steps": self.steps, "after_done": self.after_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value.to(self.device))

    def render(self) -> np.ndarray:  # env 0 as an RGB frame, for evaluation videos
        frame = np.full((16, 16 * (self.length + 1), 3), 40, dtype=np.uint8)
        cell = int(self.position[0])
        frame[:, 16 * self.length :] = (0, 160, 0)  # the goal
        frame[2:14, 16 * cell + 2 : 16 * cell + 14] = 255
        return frame

    def close(self) -> None:
        pass


def make_corridor(env_id: str, *, num_envs: int = 1, seed: int = 0, device: Any = "cpu",
                  evaluation: bool = False, render: bool = False, **options: Any) -> Corridor:
    """The factory `ctx.make_env` calls, with the family's options (`corridor_length`) as keywords."""
    if env_id != "Corridor-v0":
        raise LabError(f"no corridor '{env_id}'; use Corridor-v0")
    return Corridor(num_envs, CorridorOptions(**options).corridor_length, device)


@hookimpl
def register_envs(register) -> None:
    register("Corridor-v0", make_corridor, description="walk right to the goal (a toy)", family=CORRIDOR)
