"""Base class for RL agents: the evaluation protocol and evaluation videos come for free."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import torch

from lab.api.algorithm import Algorithm, Kind, Target
from lab.api.errors import LabError


class Agent(Algorithm):
    """An algorithm that acts in `--env`. Subclasses implement `act` (and training);
    `evaluate` runs the runner's evaluation protocol and `write_media` records a video.

    `act` takes a batch of observations as tensors on the run's device, and nothing else:
    what a user holds (numpy, one observation, another device) is converted by the policy
    `lab.load` returns, as SB3's `predict` does.
    """

    kind: ClassVar[Kind] = Kind.AGENT
    video_max_steps: ClassVar[int] = 2_000
    evaluates_on_every_rank: ClassVar[bool] = False  # under torchrun rank 0 plays the evaluation episodes
    default_steps: ClassVar[int | None] = 100_000
    default_epochs: ClassVar[int | None] = None

    @classmethod
    def check_target(cls, target: Target) -> None:
        """Refuse, as one LabError, a run without `--env`, with `--data`, or with an
        `--epochs` budget (agents count steps)."""
        if target.env is None:
            raise LabError(f"{cls.name} is an agent: pass --env ID (e.g. CartPole-v1; `lab plugins` lists envs)")
        if target.data is not None:
            raise LabError(f"{cls.name} is an agent and learns from --env {target.env}; --data is for dataset "
                           "algorithms: leave it out")
        if target.epochs is not None:
            raise LabError(f"{cls.name} is an agent: give its budget with --steps, not --epochs")

    @classmethod
    def next_command(cls, run_dir: Path) -> str:
        """After an agent finished: watch it play (`lab eval RUN --video`)."""
        return f"lab eval {run_dir} --video"

    def require_discrete_actions(self, space: gym.Space[Any], env: Any) -> None:
        """Refuse (closing `env`) an action space that is not Discrete, in one line."""
        if not isinstance(space, gym.spaces.Discrete):
            env.close()
            raise LabError(f"{self.name} needs discrete actions; {self.ctx.env_id} has {space}. "
                           "Use an env with discrete actions (e.g. CartPole-v1, ALE/Breakout-v5)")

    @abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for a batch of observations (num_envs, *obs_shape) on the run's device.

        `deterministic=True` is the evaluation policy: draw any randomness it needs (an
        evaluation epsilon) from `self.ctx.rng.eval_generator()`, never a training stream.
        """

    def evaluate(self) -> dict[str, float]:
        """The evaluation protocol (`ctx.evaluate_policy`): `ctx.eval_episodes` whole episodes
        on evaluation envs seeded from (run seed, global_step), acting with `act(obs,
        deterministic=True)`; returns `eval/return_mean`, `eval/return_std`, ...."""
        return self.ctx.evaluate_policy(self.act, self.global_step)

    def write_media(self, media_dir: Path) -> dict[str, Path]:
        """An MP4 of one evaluation episode in media/ (`eval/video`), at most
        `video_max_steps` steps long."""
        path = self.ctx.media_path(f"eval-step{self.global_step:09d}", ".mp4")
        self.ctx.record_video(self.act, path, self.global_step, max_steps=self.video_max_steps)
        return {"eval/video": path}
