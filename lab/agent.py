"""Base class for RL agents: the evaluation protocol and evaluation videos come for free."""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from lab.algorithm import Algorithm, Kind
from lab.errors import LabError
from lab.rl.evaluation import evaluate_policy, evaluation_seed, record_video

if TYPE_CHECKING:
    from lab.run.registry import Registry
    from lab.run.settings import RunConfig


class Agent(Algorithm):
    """An algorithm that acts in `--env`. Subclasses implement `act` (and training);
    `evaluate` runs `lab.rl.evaluation`'s protocol and `write_media` records a video.

    `act` also takes what a user holds (`lab.load(run).act(obs)`, as SB3's `predict`): a
    numpy array or a tensor, one observation or a batch, on any device; the actions come
    back the same way (numpy for numpy, one action for one observation).
    """

    kind: ClassVar[Kind] = "agent"
    video_max_steps: ClassVar[int] = 2_000
    evaluates_on_every_rank: ClassVar[bool] = False  # under torchrun rank 0 plays the evaluation episodes
    default_steps: ClassVar[int | None] = 100_000
    default_epochs: ClassVar[int | None] = None

    @classmethod
    def check_target(cls, run: RunConfig, registry: Registry) -> None:
        """Refuse, as one LabError, a run without `--env`, with an env no factory makes, or
        with an `--epochs` budget (agents count steps)."""
        if run.env is None:
            raise LabError(f"{cls.name} is an agent: pass --env ID (e.g. CartPole-v1; `lab plugins` lists envs)")
        if run.data is not None:
            raise LabError(f"{cls.name} is an agent and learns from --env {run.env}; --data is for dataset "
                           "algorithms: leave it out")
        registry.env(run.env)
        if run.epochs is not None:
            raise LabError(f"{cls.name} is an agent: give its budget with --steps, not --epochs")

    @classmethod
    def next_command(cls, run_dir: Path) -> str:
        """After an agent finished: watch it play (`lab eval RUN --video`)."""
        return f"lab eval {run_dir} --video"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "act" in cls.__dict__ and not getattr(cls.__dict__["act"], "takes_user_observations", False):
            cls.act = _takes_user_observations(cls.__dict__["act"])

    def require_discrete_actions(self, space: gym.Space, env: Any) -> None:
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
        """The evaluation protocol (`lab.rl.evaluation`): `ctx.eval_episodes` whole episodes on
        evaluation envs seeded from (run seed, global_step), acting with `act(obs,
        deterministic=True)`; returns `eval/return_mean`, `eval/return_std`, ...."""
        seed = evaluation_seed(self.ctx, self.global_step)
        return evaluate_policy(self.ctx, self.act, self.ctx.eval_episodes, seed)

    def write_media(self, media_dir: Path) -> dict[str, Path]:
        """An MP4 of one evaluation episode in media/ (`eval/video`), at most
        `video_max_steps` steps long."""
        path = self.ctx.media_path(f"eval-step{self.global_step:09d}", ".mp4")
        record_video(self.ctx, self.act, path, evaluation_seed(self.ctx, self.global_step),
                     max_steps=self.video_max_steps)
        return {"eval/video": path}


def _takes_user_observations(act: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """`act` for batched tensors on the run's device, widened to numpy arrays, single
    observations and other devices; batched tensors on the device pass straight through."""

    @functools.wraps(act)
    def wrapper(self: Agent, obs: Any, deterministic: bool = True) -> Any:
        dims = len(self.ctx.observation_space().shape)
        if isinstance(obs, torch.Tensor) and obs.dim() > dims and obs.device == self.ctx.device:
            return act(self, obs, deterministic)
        from_numpy = not isinstance(obs, torch.Tensor)
        tensor = torch.as_tensor(np.asarray(obs) if from_numpy else obs)
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()
        single = tensor.dim() == dims
        if not single and tensor.dim() != dims + 1:
            raise ValueError(f"act() takes one observation of shape {tuple(self.ctx.observation_space().shape)} "
                             f"or a batch of them; got shape {tuple(tensor.shape)}")
        with torch.no_grad():
            actions = act(self, tensor.to(self.ctx.device).unsqueeze(0) if single else tensor.to(self.ctx.device),
                          deterministic)
        actions = actions[0] if single else actions
        if from_numpy:
            return actions.cpu().numpy()
        return actions.to(obs.device)

    wrapper.takes_user_observations = True  # type: ignore[attr-defined]
    return wrapper
