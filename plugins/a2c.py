"""`a2c`: synchronous advantage actor-critic (Mnih et al. 2016, the A3C paper's A2C form).

`num_envs` envs step together for `n_steps`; GAE(lambda) advantages (lambda 1: plain
n-step returns) drive one gradient step on policy loss + value loss - entropy bonus, with
RMSprop as in SB3 and RL Zoo. Names, defaults and logged metrics are SB3's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lab.api import hookimpl, option
from lab.buffers.rollout import RolloutBatch
from lab.rl.onpolicy import OnPolicyAgent, OnPolicyConfig
from lab.rl.policies import ActorCritic


@dataclass
class A2CConfig(OnPolicyConfig):
    learning_rate: float = option(7e-4, "RMSprop learning rate")
    n_steps: int = option(5, "steps per env per update")
    gae_lambda: float = option(1.0, "GAE lambda (1: plain n-step returns)")
    normalize_advantage: bool = option(False, "standardise advantages per update")
    use_rms_prop: bool = option(True, "RMSprop (alpha 0.99) instead of Adam")
    rms_prop_eps: float = option(1e-5, "RMSprop epsilon")


ATARI_A2C = dict(steps=10_000_000, num_envs=16, ent_coef=0.01, vf_coef=0.25)
A2C_PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(steps=500_000, num_envs=8, ent_coef=0.0),
    "Acrobot-v1": dict(steps=500_000, norm_obs=True, norm_reward=True, num_envs=16, ent_coef=0.0),
    "LunarLander-v3": dict(steps=200_000, num_envs=8, gamma=0.995, n_steps=5, learning_rate=0.00083, anneal_lr=True,
                           ent_coef=0.00001),
    "atari": ATARI_A2C,
}


class A2C(OnPolicyAgent):
    """Synchronous advantage actor-critic: one RMSprop step per short rollout of all envs."""

    name = "a2c"
    Config = A2CConfig
    presets = A2C_PRESETS

    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.use_rms_prop:
            return torch.optim.RMSprop(self.policy.parameters(), lr=c.learning_rate, alpha=0.99, eps=c.rms_prop_eps,
                                       foreach=True)
        return super().make_optimizer()

    def loss(self, policy: ActorCritic, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.policy_gradient_loss(policy, batch)  # A = GAE(lambda) advantages of this short rollout


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    register(A2C)
