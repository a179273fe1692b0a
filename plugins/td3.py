"""`td3`: Twin Delayed DDPG (Fujimoto et al. 2018).

Reads top to bottom next to the paper (and CleanRL's td3_continuous_action.py), on the lab's
off-policy service (`lab.rl.offpolicy`) and continuous-control networks (`lab.rl.actors`).
Exploration adds Gaussian noise to the deterministic policy; one gradient step:

    a'  = clip(mu'(s') + clip(N(0, target_policy_noise), +-target_noise_clip), -1, 1)   (smoothing)
    y   = r + gamma^n (1 - done) min_i Q'_i(s', a')                                  (clipped double Q)
    critics:  sum_i (Q_i(s, a) - y)^2                           (both critics: one batched network)
    every `policy_delay` steps:
        actor:  -Q_1(s, mu(s))
        mu' <- (1 - tau) mu' + tau mu;  Q' <- (1 - tau) Q' + tau Q

Actions are in [-1, 1] inside the agent (noise scales are fractions of the half-range of
the env's box, as SB3 has them) and mapped to the box on the way to the env. Names and
defaults are Stable-Baselines3's, except that exploration noise is on by default
(`action_noise` 0.1, the paper's and RL Zoo's value; SB3 has none); presets are RL Zoo's.
Evaluation is the deterministic policy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lab.api import check_ranges, hookimpl, option
from lab.rl.actors import DeterministicActor, TwinQ
from lab.rl.offpolicy import ContinuousOffPolicyAgent, OffPolicyConfig, adam, soft_update


@dataclass
class TD3Config(OffPolicyConfig):
    learning_rate: float = option(1e-3, "Adam learning rate")
    net_arch: tuple[int, ...] = option((400, 300), "MLP widths of the actor and of each critic")
    policy_delay: int = option(2, "critic updates per actor (and target) update")
    target_policy_noise: float = option(0.2, "std of the target policy smoothing noise")
    target_noise_clip: float = option(0.5, "clip of the target policy smoothing noise")
    action_noise: float = option(0.1, "std of the Gaussian exploration noise (0: none, as SB3's default)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("policy_delay",),
                     non_negative=("target_policy_noise", "target_noise_clip", "action_noise"))


MUJOCO_TD3 = dict(steps=1_000_000, learning_starts=10_000, action_noise=0.1, learning_rate=1e-3, batch_size=256,
                  net_arch=(400, 300))
TD3_PRESETS: dict[str, dict[str, Any]] = {  # RL Zoo's td3.yml
    "Pendulum-v1": dict(steps=20_000, gamma=0.98, buffer_size=200_000, learning_starts=10_000, action_noise=0.1,
                        learning_rate=1e-3, net_arch=(400, 300)),
    "LunarLanderContinuous-v3": dict(steps=300_000, gamma=0.98, buffer_size=200_000, learning_starts=10_000,
                                     action_noise=0.1, learning_rate=1e-3, net_arch=(400, 300)),
    "BipedalWalker-v3": dict(steps=1_000_000, gamma=0.98, buffer_size=200_000, learning_starts=10_000,
                             action_noise=0.1, learning_rate=1e-3, net_arch=(400, 300)),
    "HalfCheetah-v5": MUJOCO_TD3,
    "Hopper-v5": MUJOCO_TD3,
    "Walker2d-v5": MUJOCO_TD3,
    "Ant-v5": MUJOCO_TD3,
}


class TD3(ContinuousOffPolicyAgent):
    """TD3: a deterministic actor, twin critics, delayed policy updates, target smoothing."""

    name = "td3"
    Config = TD3Config
    presets = TD3_PRESETS
    saved = ("actor", "actor_target", "critic", "critic_target", "actor_optimizer", "critic_optimizer")

    def __init__(self, config: TD3Config, ctx: Any) -> None:
        super().__init__(config, ctx)
        obs_dim, action_dim = self.obs_dim, self.action_dim
        self.actor = DeterministicActor(obs_dim, action_dim, config.net_arch).to(ctx.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = TwinQ(obs_dim, action_dim, config.net_arch).to(ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), config.learning_rate, ctx.device)
        self.critic_optimizer = adam(self.critic.parameters(), config.learning_rate, ctx.device)

    # ------------------------------------------------------------------ acting

    def exploration_action(self, obs: torch.Tensor) -> torch.Tensor:
        actions = self.actor(obs.float())
        if self.config.action_noise > 0:
            noise = torch.randn(actions.shape, generator=self.action_generator, device=actions.device)
            actions = (actions + self.config.action_noise * noise).clamp(-1.0, 1.0)
        return actions

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """The deterministic policy (evaluation) or the noisy one, in the env's units."""
        with torch.no_grad():
            actions = self.actor(obs.float()) if deterministic else self.exploration_action(obs)
        return self.scale.to_env(actions)

    # ---------------------------------------------------------------- learning

    def gradient_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        batch = self.buffer.sample(c.batch_size)
        obs = batch.observations
        with torch.no_grad():
            next_actions = self.actor_target.smoothed(batch.next_observations, c.target_policy_noise,
                                                      c.target_noise_clip, self.action_generator)
            next_q = self.critic_target(batch.next_observations, next_actions).min(0).values
            targets = batch.rewards + batch.discounts * (1.0 - batch.dones) * next_q
        q = self.critic(obs, batch.actions)
        critic_loss = (q - targets).square().mean(1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        metrics = {"train/critic_loss": critic_loss.detach()}

        self.updates += 1
        if self.updates % c.policy_delay == 0:
            self.critic.requires_grad_(False)
            actor_loss = -self.critic(obs, self.actor(obs))[0].mean()
            self.critic.requires_grad_(True)
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            soft_update(self.actor_target, self.actor, c.tau)
            soft_update(self.critic_target, self.critic, c.tau)
            metrics["train/actor_loss"] = actor_loss.detach()
        return metrics


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    register(TD3)
