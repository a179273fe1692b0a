"""`sac`: Soft Actor-Critic with twin critics and automatic entropy tuning (Haarnoja et al. 2018).

Reads top to bottom next to the paper (and CleanRL's sac_continuous_action.py), on the lab's
off-policy service (`lab.rl.offpolicy`: replay, the acting loop, checkpoints) and its
continuous-control networks (`lab.rl.actors`). One gradient step:

    a', log pi(a'|s')  ~ pi(s')                                 (a fresh sample for the target)
    y   = r + gamma^n (1 - done) (min_i Q'_i(s', a') - alpha log pi(a'|s'))
    critics:  0.5 sum_i (Q_i(s, a) - y)^2                       (both critics: one batched network)
    a~, log pi(a~|s)  ~ pi(s)
    actor:    alpha log pi(a~|s) - min_i Q_i(s, a~)
    alpha:    -log alpha (log pi(a~|s) + target_entropy)          (target entropy -|A| by default)
    Q'  <- (1 - tau) Q' + tau Q                                  (Polyak, every step)

Names, defaults and logged metrics are Stable-Baselines3's (its order of updates too: the
entropy coefficient, then the critics, then the actor on the critics just updated);
presets are RL Zoo's. Evaluation is deterministic: tanh of the mean action, as SB3's.
Speed: no host sync in the step (metrics stay tensors until the runner's log row), fused
Adam, both critics as one batched network with one optimizer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lab.api import hookimpl, option
from lab.rl.actors import SquashedGaussianActor, TwinQ
from lab.rl.offpolicy import ContinuousOffPolicyAgent, OffPolicyConfig, adam, soft_update


@dataclass(frozen=True)
class EntropyCoefficient:
    """SAC's alpha as `--ent-coef` spells it (SB3's syntax), read once: a fixed value, or
    `tuned` by its own loss starting from `initial`."""

    initial: float
    tuned: bool

    @classmethod
    def parse(cls, text: str) -> EntropyCoefficient:
        """`X` (fixed at X), `auto` (tuned from 1) or `auto_X` (tuned from X); X positive."""
        tuned = text == "auto" or text.startswith("auto_")
        number = "1" if text == "auto" else text.removeprefix("auto_")
        try:
            initial = float(number)
        except ValueError:
            raise ValueError(f"--ent-coef takes a number, auto or auto_X, got {text!r}") from None
        if not 0 < initial < math.inf:
            raise ValueError(f"--ent-coef must be a positive finite number, got {text}")
        return cls(initial, tuned)


def parse_target_entropy(text: str) -> float | None:
    """`--target-entropy`: a number, or None for `auto` (-|A|, known once the env is)."""
    if text == "auto":
        return None
    try:
        target = float(text)
    except ValueError:
        raise ValueError(f"--target-entropy takes a number or auto, got {text!r}") from None
    if not math.isfinite(target):
        raise ValueError(f"--target-entropy must be a finite number (or auto), got {text}")
    return target


@dataclass
class SACConfig(OffPolicyConfig):
    ent_coef: str = option("auto", "entropy coefficient: a number, `auto` (tuned, from 1) or `auto_X` (tuned, from X)")
    target_entropy: str = option("auto", "the entropy `auto` tunes towards: a number, or `auto` (-|A|)")
    target_update_interval: int = option(1, "gradient steps between target updates")

    def __post_init__(self) -> None:
        super().__post_init__()
        EntropyCoefficient.parse(self.ent_coef)  # a bad value is refused here, not when the run starts
        parse_target_entropy(self.target_entropy)

    @property
    def entropy_coefficient(self) -> EntropyCoefficient:
        return EntropyCoefficient.parse(self.ent_coef)

    @property
    def entropy_target(self) -> float | None:
        """The entropy a tuned alpha aims at; None: -|A| (`auto`)."""
        return parse_target_entropy(self.target_entropy)


MUJOCO_SAC = dict(steps=1_000_000, learning_starts=10_000)
SAC_PRESETS: dict[str, dict[str, Any]] = {  # RL Zoo's sac.yml
    "Pendulum-v1": dict(steps=20_000, learning_rate=1e-3),
    "LunarLanderContinuous-v3": dict(steps=500_000, batch_size=256, learning_rate=7.3e-4, buffer_size=1_000_000,
                                     gamma=0.99, tau=0.01, learning_starts=10_000, net_arch=(400, 300)),
    "BipedalWalker-v3": dict(steps=500_000, learning_rate=7.3e-4, buffer_size=300_000, batch_size=256, gamma=0.98,
                             tau=0.02, train_freq=64, gradient_steps=64, learning_starts=10_000, net_arch=(400, 300)),
    "HalfCheetah-v5": MUJOCO_SAC,
    "Hopper-v5": MUJOCO_SAC,
    "Walker2d-v5": MUJOCO_SAC,
    "Ant-v5": MUJOCO_SAC,
}


class SAC(ContinuousOffPolicyAgent):
    """Soft Actor-Critic: a squashed-Gaussian actor, twin critics, a tuned entropy bonus."""

    name = "sac"
    Config = SACConfig
    presets = SAC_PRESETS
    saved = ("actor", "critic", "critic_target", "critic_optimizer", "actor_optimizer", "entropy",
             "entropy_optimizer")

    def __init__(self, config: SACConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        obs_dim, action_dim = self.obs_dim, self.action_dim
        self.actor = SquashedGaussianActor(obs_dim, action_dim, config.net_arch).to(ctx.device)
        self.critic = self.make_critic(obs_dim, action_dim).to(ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), config.learning_rate, ctx.device)
        self.critic_optimizer = adam(self.critic.parameters(), config.learning_rate, ctx.device)
        # alpha = exp(log_alpha): tuned by its own loss (`auto`), or a constant
        coefficient = config.entropy_coefficient
        self.tune_entropy = coefficient.tuned
        self.entropy = torch.nn.ParameterDict({"log_alpha": torch.nn.Parameter(
            torch.tensor([coefficient.initial], device=ctx.device).log(), requires_grad=self.tune_entropy)})
        self.entropy_optimizer = adam(self.entropy.parameters(), config.learning_rate, ctx.device)
        target = config.entropy_target
        self.target_entropy = -float(action_dim) if target is None else target

    def make_critic(self, obs_dim: int, action_dim: int) -> TwinQ:
        """Q1, Q2(s, a) as one batched network (an ensemble of more for a subclass: REDQ)."""
        return TwinQ(obs_dim, action_dim, self.config.net_arch)

    # ------------------------------------------------------------------ acting

    def exploration_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.sample(obs.float(), self.action_generator)[0]

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """The mean action (evaluation, as SB3's) or a sample, in the env's units."""
        with torch.no_grad():
            actions = self.actor.mode(obs.float()) if deterministic else \
                self.actor.sample(obs.float(), self.action_generator)[0]
        return self.scale.to_env(actions)

    # ---------------------------------------------------------------- learning

    def gradient_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        batch = self.buffer.sample(c.batch_size)
        obs, next_obs = batch.observations, batch.next_observations
        generator = self.action_generator

        # the entropy coefficient, from the current policy's entropy on this batch
        actions_pi, log_pi = self.actor.sample(obs, generator)
        alpha = self.entropy["log_alpha"].exp().detach()
        metrics = {}
        if self.tune_entropy:
            entropy_loss = -(self.entropy["log_alpha"] * (log_pi + self.target_entropy).detach()).mean()
            self.entropy_optimizer.zero_grad(set_to_none=True)
            entropy_loss.backward()
            self.entropy_optimizer.step()
            metrics["train/ent_coef_loss"] = entropy_loss.detach()

        # the critics, towards the soft target of a fresh sample at s'
        with torch.no_grad():
            next_actions, next_log_pi = self.actor.sample(next_obs, generator)
            next_q = self.target_q(next_obs, next_actions) - alpha * next_log_pi
            targets = batch.rewards + batch.discounts * (1.0 - batch.dones) * next_q
        q = self.critic(obs, batch.actions)
        critic_loss = 0.5 * (q - targets).square().mean(1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # the actor, on the critics just updated (their weights take no gradient here)
        self.critic.requires_grad_(False)
        q_pi = self.policy_q(obs, actions_pi)
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_pi - q_pi).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        self.updates += 1
        if self.updates % c.target_update_interval == 0:
            soft_update(self.critic_target, self.critic, c.tau)
        return {**metrics, "train/critic_loss": critic_loss.detach(), "train/actor_loss": actor_loss.detach(),
                "train/ent_coef": alpha.squeeze()}

    def target_q(self, next_obs: torch.Tensor, next_actions: torch.Tensor) -> torch.Tensor:
        """The value the soft target bootstraps from: the smaller target critic (clipped double Q)."""
        return self.critic_target(next_obs, next_actions).min(0).values

    def policy_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The value the actor climbs: the smaller critic."""
        return self.critic(obs, actions).min(0).values


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    register(SAC)
