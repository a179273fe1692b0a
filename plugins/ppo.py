"""`ppo`: Proximal Policy Optimization with the clipped objective (Schulman et al. 2017).

Reads top to bottom next to the paper, on the lab's shared rollout loop, GAE and
actor-critic (`lab.rl.onpolicy`): for `n_epochs` passes over each rollout (`update_plan`),
shuffled minibatches take gradient steps on `loss`: the clipped surrogate, the (optionally
clipped) value loss and an entropy bonus; a pass stops early when the approximate KL to the
rollout's policy exceeds 1.5 x `target_kl`. The loss is a function of one minibatch, so a
population of seeds (`--vectorize`) maps it over its members. Names, defaults and logged metrics are Stable-Baselines3's;
presets are RL Zoo's tuned values (Atari: CleanRL's ppo_atari).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lab.api import check_ranges, hookimpl, option
from lab.buffers.rollout import RolloutBatch
from lab.rl.onpolicy import OnPolicyAgent, OnPolicyConfig, UpdatePlan
from lab.rl.policies import ActorCritic
from lab.schedules import anneal


@dataclass
class PPOConfig(OnPolicyConfig):
    batch_size: int = option(64, "minibatch size")
    n_epochs: int = option(10, "passes over each rollout")
    clip_range: float = option(0.2, "clip range of the probability ratio")
    anneal_clip_range: bool = option(False, "anneal the clip range linearly to 0")
    clip_range_vf: float | None = option(None, "clip the value change to this range (none: off)")
    target_kl: float | None = option(None, "stop a pass early above 1.5x this approximate KL")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("batch_size", "n_epochs"),
                     positive=("clip_range", "clip_range_vf", "target_kl"))


MUJOCO_RELU = dict(norm_obs=True, norm_reward=True, num_envs=1, steps=1_000_000, log_std_init=-2.0,
                   ortho_init=False, activation="relu", net_arch=(256, 256))
ATARI_PPO = dict(steps=10_000_000, num_envs=8, n_steps=128, n_epochs=4, batch_size=256, learning_rate=2.5e-4,
                 anneal_lr=True, clip_range=0.1, clip_range_vf=0.1, ent_coef=0.01, vf_coef=0.5)
PPO_PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(steps=100_000, num_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                        n_epochs=20, learning_rate=1e-3, anneal_lr=True, clip_range=0.2, anneal_clip_range=True),
    "Acrobot-v1": dict(steps=1_000_000, norm_obs=True, norm_reward=True, num_envs=16, n_steps=256,
                       gae_lambda=0.94, n_epochs=4),
    "Pendulum-v1": dict(steps=200_000, num_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10,
                        learning_rate=1e-3, clip_range=0.2),
    "LunarLander-v3": dict(steps=1_000_000, num_envs=16, n_steps=1024, batch_size=64, gae_lambda=0.98,
                           gamma=0.999, n_epochs=4, ent_coef=0.01),
    "BipedalWalker-v3": dict(steps=5_000_000, norm_obs=True, norm_reward=True, num_envs=32, n_steps=2048,
                             batch_size=64, gamma=0.999, n_epochs=10, clip_range=0.18),
    # CleanRL's ppo_continuous_action (SB3's defaults, normalised, lr annealed): on seed 1 RL Zoo's
    # Hopper-v3 values stalled at 1,005 in 1M steps where these passed 3,000 by 400k
    "Hopper-v5": dict(norm_obs=True, norm_reward=True, num_envs=1, steps=1_000_000, anneal_lr=True),
    "Walker2d-v5": dict(norm_obs=True, norm_reward=True, num_envs=1, steps=1_000_000, batch_size=32, n_steps=512,
                        gamma=0.99, learning_rate=5.05041e-05, ent_coef=0.000585045, clip_range=0.1, n_epochs=20,
                        gae_lambda=0.95, max_grad_norm=1.0, vf_coef=0.871923),
    "HalfCheetah-v5": dict(MUJOCO_RELU, batch_size=64, n_steps=512, gamma=0.98, learning_rate=2.0633e-05,
                           ent_coef=0.000401762, clip_range=0.1, n_epochs=20, gae_lambda=0.92, max_grad_norm=0.8,
                           vf_coef=0.58096),
    "atari": ATARI_PPO,
}


class PPO(OnPolicyAgent):
    """PPO-Clip with GAE, advantage normalisation, value clipping, entropy bonus and target-KL stop."""

    name = "ppo"
    Config = PPOConfig
    presets = PPO_PRESETS

    def update_plan(self) -> UpdatePlan:
        c = self.config
        self.clip = anneal(c.clip_range, self.ctx.total_steps, c.anneal_clip_range)(self.global_step)
        return UpdatePlan(c.n_epochs, c.batch_size, None if c.target_kl is None else 1.5 * c.target_kl)

    def loss(self, policy: ActorCritic, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c, clip = self.config, self.clip
        out, values = policy(batch.observations)
        log_prob = policy.log_prob(out, batch.actions)
        advantages = batch.standardized(batch.advantages) if c.normalize_advantage else batch.advantages
        log_ratio = log_prob - batch.log_probs
        ratio = log_ratio.exp()
        policy_loss = batch.mean(torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)))
        if c.clip_range_vf is not None:  # a value that moves further than the range gets no credit
            values = batch.values + (values - batch.values).clamp(-c.clip_range_vf, c.clip_range_vf)
        value_loss = batch.mean((batch.returns - values).square())
        entropy_loss = -batch.mean(policy.entropy(out))
        loss = policy_loss + c.ent_coef * entropy_loss + c.vf_coef * value_loss
        with torch.no_grad():
            approx_kl = batch.mean((ratio - 1) - log_ratio)  # Schulman's k3 estimator
            clipped = batch.mean(((ratio - 1).abs() > clip).float())
        return loss, {"policy_gradient_loss": policy_loss, "value_loss": value_loss, "entropy_loss": entropy_loss,
                      "approx_kl": approx_kl, "clip_fraction": clipped, "loss": loss}

    def plan_metrics(self) -> dict[str, float]:
        return {"train/clip_range": self.clip}


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    register(PPO)
