"""`redq`: Randomized Ensembled Double Q-learning (Chen et al. 2021), a subclass of `sac`.

REDQ is SAC with an ensemble of critics (ten instead of two), each target from the smaller
of a random pair of target critics, the actor climbing their mean, and several gradient
steps per env step. Everything else (replay, the acting loop, entropy tuning, Polyak
targets, checkpoints, exact resume) comes from `sac` and the lab's off-policy service:

    lab train redq --env Pendulum-v1 --plugins-dir docs/examples
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lab.api import check_ranges, hookimpl, option
from lab.plugins.sac import SAC, SACConfig
from lab.rl.actors import TwinQ


@dataclass
class REDQConfig(SACConfig):
    critics: int = option(10, "critics in the ensemble")
    subset: int = option(2, "target critics each target takes the minimum over")
    gradient_steps: int = option(5, "gradient steps per env step (the paper's update-to-data ratio is 20)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("critics", "subset"))
        if self.subset > self.critics:
            raise ValueError(f"--subset {self.subset} must not exceed --critics {self.critics}")


class REDQ(SAC):
    """SAC with an ensemble of critics: a random pair of them sets each target."""

    name = "redq"
    Config = REDQConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"Pendulum-v1": {"steps": 10_000, "learning_rate": 1e-3}}

    def make_critic(self, obs_dim: int, action_dim: int) -> TwinQ:
        return TwinQ(obs_dim, action_dim, self.config.net_arch, critics=self.config.critics)

    def target_q(self, next_obs: torch.Tensor, next_actions: torch.Tensor) -> torch.Tensor:
        chosen = torch.randperm(self.config.critics, generator=self.action_generator,
                                device=self.ctx.device)[: self.config.subset]
        return self.critic_target(next_obs, next_actions)[chosen].min(0).values

    def policy_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.critic(obs, actions).mean(0)


@hookimpl
def register_algorithms(register) -> None:
    register(REDQ)
