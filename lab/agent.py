"""Base class for RL agents: the evaluation protocol and evaluation videos come for free."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from lab.algorithm import Algorithm, Kind
from lab.rl.evaluation import evaluate_policy, evaluation_seed, record_video


class Agent(Algorithm):
    """An algorithm that acts in `--env`. Subclasses implement `act` (and training);
    `evaluate` runs `lab.rl.evaluation`'s protocol and `write_media` records a video.

    `env_options` are passed to every `ctx.make_env` call (training and evaluation), e.g.
    `{"frame_stack": 4}`; learning-only options are ignored by evaluation envs.
    """

    kind: ClassVar[Kind] = "agent"
    video_max_steps: ClassVar[int] = 2_000

    @property
    def env_options(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for a batch of observations (num_envs, *obs_shape) on the run's device.

        `deterministic=True` is the evaluation policy: draw any randomness it needs (an
        evaluation epsilon) from `self.ctx.rng.eval_generator()`, never a training stream.
        """

    def evaluate(self) -> dict[str, float]:
        seed = evaluation_seed(self.ctx, self.global_step)
        return evaluate_policy(self.ctx, self.act, self.ctx.eval_episodes, seed, **self.env_options)

    def write_media(self, media_dir: Path) -> dict[str, Path]:
        path = self.ctx.media_path(f"eval-step{self.global_step:09d}", ".mp4")
        record_video(self.ctx, self.act, path, evaluation_seed(self.ctx, self.global_step),
                     max_steps=self.video_max_steps, **self.env_options)
        return {"eval/video": path}
