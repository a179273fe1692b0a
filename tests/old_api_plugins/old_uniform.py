"""`old-uniform`: the 0.1 guide's agent as it was written then, imports and all.

The module paths it imports (`lab.agent`, `lab.config`, `lab.hookspecs`) moved into `lab.api`
and stay as aliases: tests/test_extending.py trains it, so a plugin written for 0.1 keeps
working. The other modules of the 0.1 API import here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.agent import Agent
from lab.algorithm import Algorithm, Kind, Pace  # noqa: F401 (the 0.1 names import)
from lab.config import check_ranges, option
from lab.datasets import ImageDataset, split_validation  # noqa: F401
from lab.errors import LabError  # noqa: F401
from lab.hookspecs import hookimpl
from lab.run.info import RunInfo  # noqa: F401
from lab.tracking import Tracker, jsonable  # noqa: F401
from lab.vecenv import EnvFamily, Episode, TrainingEnv, VecEnv  # noqa: F401


@dataclass
class UniformConfig:
    num_envs: int = option(1, "parallel environments")  # the flag --num-envs, the YAML key num_envs

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("num_envs",))  # a bad value is one `error:` line


class UniformAgent(Agent):
    """Uniformly random actions: the score a learning agent has to beat."""

    name = "old-uniform"
    Config = UniformConfig
    default_steps = 10_000  # the budget when neither --steps nor a preset gives one

    @classmethod
    def step_multiple(cls, config: UniformConfig) -> int:
        return config.num_envs  # one train_step advances num_envs steps: budgets round up to it

    def __init__(self, config: UniformConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.envs = ctx.make_env(num_envs=config.num_envs)  # torch tensors on ctx.device
        self.require_discrete_actions(self.envs.single_action_space, self.envs)
        self.envs.reset(seed=ctx.seed)
        self.rng = ctx.generator("actions")  # a random stream the runner saves and restores

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        # deterministic=True is the evaluation policy: its randomness comes from the
        # evaluation stream, so evaluating never changes what training draws
        rng = self.ctx.rng.eval_generator() if deterministic else self.rng
        n = int(self.envs.single_action_space.n)
        return torch.randint(n, (obs.shape[0],), generator=rng, device=self.ctx.device)

    def train_step(self) -> dict[str, float]:
        self.envs.step(self.act(self.envs.obs, deterministic=False))  # .obs: what to act on next
        self.global_step += self.envs.num_envs
        return {}  # scalars to log, e.g. {"train/loss": 0.3}

    def close(self) -> None:
        self.envs.close()


@hookimpl
def register_algorithms(register) -> None:
    register(UniformAgent)
