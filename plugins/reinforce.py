"""`reinforce`: Monte-Carlo policy gradient with a learned value baseline (Williams 1992).

The textbook algorithm, on the lab's shared rollout loop and actor-critic:

    collect a batch of experience with the current policy pi_theta
    G_t = r_t + gamma * G_{t+1}                          (the return from each step on)
    loss = -mean( log pi(a_t | s_t) * (G_t - V(s_t)) )   (policy gradient; V is a baseline)
         + vf_coef * mean( (G_t - V(s_t))^2 )            (fit the baseline to the returns)
         - ent_coef * mean( entropy of pi(. | s_t) )      (optional exploration bonus)
    one gradient step; repeat

The loss is the one `a2c` minimises too (`OnPolicyAgent.policy_gradient_loss`); what makes
this REINFORCE is lambda = 1 and batches of whole episodes.

The returns are Monte-Carlo (GAE with lambda 1): no bootstrapping inside an episode. Only
where an episode is cut, by a time limit or by the end of the batch, does the value of
the next state stand in for the rest of the return; with `n_steps` at least the episode
length (the CartPole preset) most episodes are whole.
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
class ReinforceConfig(OnPolicyConfig):
    learning_rate: float = option(1e-3, "Adam learning rate")
    n_steps: int = option(500, "steps per env per batch")
    gae_lambda: float = option(1.0, "must stay 1: REINFORCE uses Monte-Carlo returns")
    num_envs: int = option(8, "parallel envs (episodes per batch)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gae_lambda != 1.0:
            raise ValueError(f"--gae-lambda {self.gae_lambda}: reinforce uses Monte-Carlo returns (1); "
                             "for bootstrapped advantages use a2c or ppo")


REINFORCE_PRESETS: dict[str, dict[str, Any]] = {
    # whole 500-step episodes per batch; eval 500 by 100-120k steps on seeds 1-3 (best 497 on seed 3)
    "CartPole-v1": dict(steps=200_000, num_envs=4, n_steps=500, learning_rate=5e-3),
}


class Reinforce(OnPolicyAgent):
    """REINFORCE with a value baseline: one gradient step per batch of Monte-Carlo returns."""

    name = "reinforce"
    Config = ReinforceConfig
    presets = REINFORCE_PRESETS

    def loss(self, policy: ActorCritic, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # one step on the whole batch: with lambda 1 the rollout's advantages are G_t - V(s_t)
        return self.policy_gradient_loss(policy, batch)


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    register(Reinforce)
