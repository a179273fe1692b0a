"""The services the runner hands an algorithm: device, seeds, tracking, envs, datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lab.vecenv import Episode, VecEnv

if TYPE_CHECKING:
    from lab.datasets import ImageDataset, UnpairedImageDataset
    from lab.registry import Registry
    from lab.tracking import Tracker


@dataclass
class Context:
    """What an algorithm may use. Built by the runner; plugins never construct it.

    total_steps: the step budget the run was created with. Schedules (exploration,
        learning-rate decay) use it as their horizon and keep it in their state, so a
        resumed or extended run never restarts a schedule.
    eval_episodes: episodes per evaluation (`lab eval --episodes N`).
    training: False under `lab eval`, so an algorithm can skip what only training needs
        (a large replay buffer, training envs).
    """

    device: torch.device
    seed: int
    total_steps: int
    run_dir: Path
    registry: Registry
    tracker: Tracker
    env_id: str | None = None
    data: str | None = None
    data_dir: Path | None = None
    eval_episodes: int = 10
    training: bool = True
    rank: int = 0
    world_size: int = 1
    _train_envs: list[VecEnv] = field(default_factory=list, repr=False)

    @property
    def media_dir(self) -> Path:
        path = self.run_dir / "media"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    def make_env(
        self,
        num_envs: int = 1,
        *,
        evaluation: bool = False,
        render: bool = False,
        seed: int | None = None,
        **options: Any,
    ) -> VecEnv:
        """Make `--env` as a vector env on this run's device.

        Training envs (evaluation=False) report finished episodes to the runner, which
        logs `train/episode_return` and `train/episode_length`. Evaluation envs follow
        the evaluation protocol (full games, no reward clipping, sticky actions).
        """
        if self.env_id is None:
            from lab.errors import LabError

            raise LabError("this algorithm needs an environment; pass --env ID (see `lab plugins`)")
        factory = self.registry.env_factory(self.env_id)
        env = factory(
            self.env_id,
            num_envs=num_envs,
            seed=self.seed if seed is None else seed,
            device=self.device,
            evaluation=evaluation,
            render=render,
            **options,
        )
        if not evaluation:
            self._train_envs.append(env)
        return env

    def load_dataset(self, **options: Any) -> ImageDataset | UnpairedImageDataset:
        """Load `--data NAME[:ARG]` from `data_dir` (CPU uint8 tensors)."""
        if self.data is None:
            from lab.errors import LabError

            raise LabError("this algorithm needs a dataset; pass --data NAME (see `lab plugins`)")
        name, _, arg = self.data.partition(":")
        factory = self.registry.dataset_factory(name)
        data_dir = self.data_dir if self.data_dir is not None else Path("data")
        return factory(data_dir, arg or None, **options)

    def generator(self, offset: int = 0, device: torch.device | None = None) -> torch.Generator:
        """A torch RNG seeded from the run seed (+offset), on `device` (default: run device)."""
        gen = torch.Generator(device=device or self.device)
        gen.manual_seed(self.seed * 1_000_003 + offset + self.rank)
        return gen

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalars now (the runner also logs what `train_step` returns)."""
        self.tracker.log(metrics, step)

    def pop_episodes(self) -> list[Episode]:
        """Finished training episodes from every training env (used by the runner)."""
        episodes: list[Episode] = []
        for env in self._train_envs:
            episodes.extend(env.pop_episodes())
        return episodes

    def close_envs(self) -> None:
        for env in self._train_envs:
            env.close()
        self._train_envs.clear()
