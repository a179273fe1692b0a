"""`dqn`: Deep Q-Networks with Double, Dueling, n-step and prioritized-replay options.

Reads top to bottom like CleanRL's dqn_atari.py, on the lab's off-policy service
(`lab.rl.offpolicy`: the acting loop, the device replay buffer, gradient-step scheduling,
checkpoints). Hyperparameters keep Stable-Baselines3's names and defaults; presets carry RL
Zoo's tuned values and budgets (every Atari game through the `atari` preset). Intervals
(`train_freq`, `target_update_interval`, `learning_starts`) count agent steps summed over all
envs, so the replay ratio (gradient_steps * batch_size / train_freq) does not change with
`--num-envs`.

A new DQN variant is a small subclass: replace `make_q_network` (a distributional or noisy
head) and `td_loss` (its loss), keep the rest (see the plugin guide).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lab.config import check_ranges, option
from lab.device import small_pass_threads
from lab.hookspecs import hookimpl
from lab.rl.offpolicy import OffPolicyAgent, OffPolicyConfig, adam, crossings, soft_update
from lab.rl.qnetworks import QNetwork, td_targets
from lab.schedules import linear


@dataclass
class DQNSettings(OffPolicyConfig):
    """The settings `dqn` shares with `sb3-dqn` (Stable-Baselines3's names and defaults)."""

    learning_rate: float = option(1e-4, "Adam learning rate")
    learning_starts: int = option(100, "agent steps of random play before learning")
    batch_size: int = option(32, "transitions per gradient step")
    tau: float = option(1.0, "target update coefficient (1: hard copy)")
    train_freq: int = option(4, "agent steps between trainings")
    net_arch: tuple[int, ...] = option((64, 64), "MLP widths for vector observations")
    target_update_interval: int = option(10_000, "agent steps between target updates")
    exploration_fraction: float = option(0.1, "fraction of the run over which epsilon decays")
    exploration_initial_eps: float = option(1.0, "epsilon at the start")
    exploration_final_eps: float = option(0.05, "epsilon after the decay")
    eval_exploration_eps: float = option(0.0, "epsilon when evaluating (Atari: 0.05, as Nature DQN)")
    max_grad_norm: float = option(10.0, "gradient clipping norm")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("target_update_interval",), positive=("max_grad_norm",),
                     fraction=("exploration_fraction", "exploration_initial_eps", "exploration_final_eps",
                               "eval_exploration_eps"))


# RL Zoo's Atari DQN (dqn.yml, `atari`), evaluated at epsilon 0.05 as in the DQN papers.
ATARI_DQN: dict[str, Any] = dict(
    steps=10_000_000, buffer_size=100_000, learning_rate=1e-4, batch_size=32, learning_starts=100_000,
    target_update_interval=1_000, train_freq=4, gradient_steps=1, exploration_fraction=0.1,
    exploration_final_eps=0.01, eval_exploration_eps=0.05,
)
# RL Zoo's tuned values and budgets (n_timesteps) for `dqn` and `sb3-dqn`.
DQN_PRESETS: dict[str, dict[str, Any]] = {
    # RL Zoo's CartPole DQN with 4x larger, 4x fewer batches (the same samples per step, a
    # quarter of the CPU time): best evaluation 500 on seeds 1-3 within the 50k budget (4 envs
    # instead of 1 reached only 350 on seed 1)
    "CartPole-v1": dict(
        steps=50_000, learning_rate=2.3e-3, batch_size=256, buffer_size=100_000, learning_starts=1_000,
        gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=32, exploration_fraction=0.16,
        exploration_final_eps=0.04, net_arch=(256, 256),
    ),
    "Acrobot-v1": dict(
        steps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
        target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
        exploration_final_eps=0.1, net_arch=(256, 256),
    ),
    "MountainCar-v0": dict(
        steps=120_000, learning_rate=4e-3, batch_size=128, buffer_size=10_000, learning_starts=1_000, gamma=0.98,
        target_update_interval=600, train_freq=16, gradient_steps=8, exploration_fraction=0.2,
        exploration_final_eps=0.07, net_arch=(256, 256),
    ),
    "LunarLander-v3": dict(
        steps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
        target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
        exploration_final_eps=0.1, net_arch=(256, 256),
    ),
    "atari": ATARI_DQN,
}


@dataclass
class DQNConfig(DQNSettings):
    double_q: bool = option(False, "Double DQN target (van Hasselt et al. 2016)")
    dueling: bool = option(False, "dueling value/advantage streams (Wang et al. 2016)")
    n_step: int = option(1, "n-step returns")
    prioritized_replay: bool = option(False, "proportional prioritized replay")
    prioritized_replay_alpha: float = option(0.6, "priority exponent")
    prioritized_replay_beta: float = option(0.4, "initial IS exponent, annealed to 1")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("n_step",))


class DQN(OffPolicyAgent):
    """DQN (Mnih et al. 2015) with Double, Dueling, n-step and prioritized-replay options."""

    name = "dqn"
    Config = DQNConfig
    presets = DQN_PRESETS
    saved = ("q", "q_target", "optimizer")

    def __init__(self, config: DQNConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.num_actions = int(self.action_space.n)
        self.q = self.make_q_network().to(ctx.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = adam(self.q.parameters(), config.learning_rate, ctx.device)
        # torch.compile per --compile: on a CPU only the Nature-CNN update pays (1.1x at batch
        # 32); a batch-1 acting pass and small MLPs run slower compiled there
        self.compiled_td_loss = ctx.compile(self.td_loss, name="dqn update", calls=self.gradient_steps_in_run,
                                            pays_on_cpu=self.images)
        self.greedy = ctx.compile(self._greedy, name="dqn acting pass", calls=lambda: self.ctx.total_steps)

    def check_action_space(self, space: Any) -> None:
        self.require_discrete_actions(space, self.env)

    def buffer_options(self) -> dict[str, Any]:
        c = self.config
        return dict(n_step=c.n_step, prioritized=c.prioritized_replay, alpha=c.prioritized_replay_alpha,
                    beta=c.prioritized_replay_beta)

    def make_q_network(self) -> nn.Module:
        """Q(s, .): the Nature CNN for frames, an MLP for vectors (a subclass may return its own)."""
        c = self.config
        return QNetwork(tuple(self.observation_space.shape), self.num_actions, c.net_arch, c.dueling)

    # ------------------------------------------------------------------ acting

    def epsilon(self) -> float:
        """SB3's exploration: random play until learning starts, then linear from the
        initial to the final epsilon over exploration_fraction of the run (from step 0)."""
        c = self.config
        if self.global_step < c.learning_starts:
            return 1.0
        schedule = linear(c.exploration_initial_eps, c.exploration_final_eps,
                          c.exploration_fraction * self.ctx.total_steps)
        return schedule(self.global_step)

    def epsilon_greedy(self, obs: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
        n = obs.shape[0]
        device = obs.device
        random_actions = torch.randint(0, self.num_actions, (n,), generator=generator, device=device)
        if epsilon >= 1.0:
            return random_actions
        explore = torch.rand(n, generator=generator, device=device) < epsilon
        if bool(explore.all()):  # early in training: no forward pass when no env acts greedily
            return random_actions
        with small_pass_threads(n, device):
            greedy = self.greedy(obs)
        return torch.where(explore, random_actions, greedy)

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.q(obs).argmax(dim=1)

    def exploration_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.epsilon_greedy(obs, self.epsilon(), self.action_generator)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Evaluation policy (greedy up to `eval_exploration_eps`) or the training policy."""
        if deterministic:
            return self.epsilon_greedy(obs, self.config.eval_exploration_eps, self.ctx.rng.eval_generator(obs.device))
        return self.epsilon_greedy(obs, self.epsilon(), self.action_generator)

    def progress_metrics(self) -> dict[str, float]:
        return {"train/epsilon": self.epsilon()}

    # ---------------------------------------------------------------- learning

    def gradient_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        beta = linear(c.prioritized_replay_beta, 1.0, self.ctx.total_steps)(self.global_step) \
            if c.prioritized_replay else None
        batch = self.buffer.sample(c.batch_size, beta=beta)
        loss, td_errors = self.compiled_td_loss(batch.observations, batch.actions, batch.rewards, batch.discounts,
                                                batch.dones, batch.next_observations, batch.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q.parameters(), c.max_grad_norm)
        self.optimizer.step()
        if c.prioritized_replay:
            self.buffer.update_priorities(batch.indices, td_errors)
        return {"train/loss": loss.detach()}

    def td_loss(self, observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                discounts: torch.Tensor, dones: torch.Tensor, next_observations: torch.Tensor,
                weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(importance-weighted Huber TD loss, TD errors): the part of a step torch.compile fuses,
        and the method a distributional subclass replaces."""
        q_values = self.q(observations).gather(1, actions.long().unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_q_target = self.q_target(next_observations)
            next_q_online = self.q(next_observations) if self.config.double_q else None
            targets = td_targets(rewards, discounts, dones, next_q_target, next_q_online)
        loss = (weights * F.smooth_l1_loss(q_values, targets, reduction="none")).mean()
        return loss, (q_values - targets).detach()

    def after_training_step(self, before: int) -> None:
        if crossings(before, self.global_step, self.config.target_update_interval):
            soft_update(self.q_target, self.q, self.config.tau)


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    register(DQN)
