"""`dqn`: Deep Q-Networks with every Rainbow piece as an option, one flag each.

A subclass of the lab's off-policy service (`lab.rl.offpolicy`: the acting loop, the device
replay buffer, gradient-step scheduling, checkpoints) that adds what is DQN's own: the
Q-network, epsilon-greedy acting, the TD loss and target updates. Hyperparameters keep
Stable-Baselines3's names and defaults; presets carry RL Zoo's tuned values and budgets
(every Atari game through the `atari` preset). Intervals (`train_freq`,
`target_update_interval`, `learning_starts`) count agent steps summed over all envs, so the
replay ratio (gradient_steps * batch_size / train_freq) does not change with `--num-envs`.

Rainbow's pieces (Hessel et al. 2018) are flags, so an ablation is one flag: `--double-q`,
`--dueling`, `--n-step N`, `--prioritized-replay`, `--distributional c51` (or `qr`,
QR-DQN's quantiles; the flag picks a return head of `lab.rl.distributional` once), `--noisy`
(noisy nets explore: epsilon 0; evaluation acts with the mean weights), plus `--augment
shift` (DrQ's random shift of sampled observations; `shift-intensity` adds the intensity
scaling Dopamine's DrQ applies after it) and `--adam-eps`. Off by default: `dqn` alone is DQN
as SB3 has it. `rainbow` is this class with all of them on. A new DQN variant is a small
subclass: replace `make_q_network` (its network) and `td_loss` (its loss), keep the rest
(see the plugin guide).

Two named presets (`--preset NAME`) set up the Atari 100k benchmark (Kaiser et al. 2020:
100k agent steps, 400k frames): `atari100k` is Data-Efficient Rainbow (DER, van Hasselt et
al. 2019) and `atari100k-drq` is DrQ(epsilon) (Kostrikov et al. 2020, as Agarwal et al. 2021
tuned it). `--augment shift` on top of `atari100k` is DER plus shifts, not DrQ: a flag
changes one setting, a preset many. Both follow the benchmark's protocol as Dopamine's
labs/atari_100k configs (DER.gin, DrQ_eps.gin) state it: no sticky actions ("Atari 100K
benchmark doesn't use sticky actions"), a lost life ends a training episode, episodes of at
most 27,000 agent steps (108k frames), 100 evaluation episodes after training, evaluated
without sticky actions (`eval_sticky_actions 0`; the lab's other Atari runs evaluate with 0.25).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from lab.api import LabError, check_ranges, hookimpl, option
from lab.augment import random_intensity, random_shift
from lab.device import small_pass_threads
from lab.rl.distributional import Categorical, ExpectedValue, Quantiles, ReturnHead
from lab.rl.noisy import remove_noise, resample_noise
from lab.rl.offpolicy import OffPolicyAgent, OffPolicyConfig, adam, crossings, soft_update
from lab.rl.q_population import QPopulation
from lab.rl.qnetworks import QNetwork, chosen, epsilon_draws
from lab.schedules import linear

Distributional = Literal["none", "c51", "qr"]


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
# The Atari 100k benchmark's protocol (Dopamine's labs/atari_100k configs): 100k agent steps,
# no sticky actions, 100 evaluation episodes once training ends (checkpoints every 10k steps).
ATARI_100K_PROTOCOL: dict[str, Any] = dict(
    steps=100_000, buffer_size=100_000, sticky_actions=0.0, eval_sticky_actions=0.0, eval_episodes=100,
    eval_interval=100_000, checkpoint_interval=10_000,
)
# `--preset NAME` presets (`dqn` and `rainbow` share them). DER: van Hasselt et al. 2019's
# table of Rainbow changes (n-step 20, one update per step from 1,600 steps, target every
# 2,000 updates, lr 1e-4, Adam eps 1.5e-4) on Rainbow's pieces with PER alpha 0.5, beta 0.4->1.
# DrQ(eps): Dopamine's DrQ_eps.gin (Agarwal et al. 2021): no noisy nets, no C51, uniform
# replay, n-step 10, the target copied after every update, epsilon 1 -> 0.01 by step 6,600
# (Dopamine: 5,000 steps after the 1,600 of warm-up), 0.001 when evaluating, random shifts.
# Both on the network of Dopamine's Atari100kRainbowAgent (its FullRainbowNetwork): one
# 512-unit hidden layer that the dueling streams share.
ATARI_100K_PRESETS: dict[str, dict[str, Any]] = {
    "atari100k": dict(
        ATARI_100K_PROTOCOL, learning_rate=1e-4, adam_eps=1.5e-4, batch_size=32, learning_starts=1_600,
        train_freq=1, gradient_steps=1, target_update_interval=2_000, gamma=0.99, n_step=20, double_q=True,
        dueling=True, dueling_hidden="shared", distributional="c51", num_atoms=51, v_min=-10.0, v_max=10.0,
        noisy=True, noisy_sigma=0.5,
        prioritized_replay=True, prioritized_replay_alpha=0.5, prioritized_replay_beta=0.4,
        eval_exploration_eps=0.001, augment="none",
    ),
    "atari100k-drq": dict(
        ATARI_100K_PROTOCOL, learning_rate=1e-4, adam_eps=1.5e-4, batch_size=32, learning_starts=1_600,
        train_freq=1, gradient_steps=1, target_update_interval=1, gamma=0.99, n_step=10, double_q=True,
        dueling=True, dueling_hidden="shared", distributional="none", noisy=False, prioritized_replay=False,
        exploration_fraction=0.066, exploration_final_eps=0.01, eval_exploration_eps=0.001, augment="shift",
    ),
}


@dataclass
class DQNConfig(DQNSettings):
    double_q: bool = option(False, "Double DQN target (van Hasselt et al. 2016)")
    dueling: bool = option(False, "dueling value/advantage streams (Wang et al. 2016)")
    dueling_hidden: Literal["per-stream", "shared"] = option(
        "per-stream", "with --dueling: a hidden layer per stream (Wang et al. 2016) or one shared by both streams "
                      "(Dopamine's Rainbow network, as its Atari 100k agents use; half the weights on frames)")
    n_step: int = option(1, "n-step returns")
    prioritized_replay: bool = option(False, "proportional prioritized replay")
    prioritized_replay_alpha: float = option(0.6, "priority exponent")
    prioritized_replay_beta: float = option(0.4, "initial IS exponent, annealed to 1")
    distributional: Distributional = option(
        "none", "return distribution: none (expected Q), c51 (categorical, Bellemare et al. 2017) or qr "
                "(quantile regression, Dabney et al. 2018)")
    num_atoms: int = option(51, "C51's atoms or QR-DQN's quantiles per action")
    v_min: float = option(-10.0, "lowest return on C51's support")
    v_max: float = option(10.0, "highest return on C51's support")
    noisy: bool = option(False, "noisy linear layers explore instead of epsilon-greedy (Fortunato et al. 2018; "
                                "evaluation acts with the mean weights)")
    noisy_sigma: float = option(0.5, "sigma0 of the factorised noise")
    adam_eps: float = option(1e-8, "Adam epsilon (Rainbow, DER: 1.5e-4)")
    augment: Literal["none", "shift", "shift-intensity"] = option(
        "none", "augment sampled observations and next observations: shift (DrQ: pad 4 by replication, "
                "random crop back; image observations); shift-intensity also scales each by "
                "1 + 0.05 * clip(N(0, 1), -2, 2), as Dopamine's DrQ does")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, at_least_one=("n_step",), positive=("noisy_sigma", "adam_eps"))
        self.return_head()  # refuses its settings here, not when the run starts

    def return_head(self) -> ReturnHead:
        """The head `--distributional` names, the one place that reads it: the network's
        outputs, its expected values and the loss all come from this object."""
        if self.distributional == "c51":
            return Categorical(self.num_atoms, self.v_min, self.v_max)
        if self.distributional == "qr":
            return Quantiles(self.num_atoms)
        return ExpectedValue()


class DQN(OffPolicyAgent):
    """DQN (Mnih et al. 2015) with Double, Dueling, n-step, prioritized replay, C51/QR, noisy nets
    and DrQ shifts as options.

    A new DQN variant is a small subclass: override `make_q_network()` (its network) or
    `td_loss(...)` (its loss: the weighted loss and per-sample priorities of a sampled batch)
    and register it; the acting loop, replay, noise, shifts, targets, checkpoints and exact
    resume stay `dqn`'s. Example: docs/examples/munchausen_dqn.py (plugin guide, "An
    off-policy agent")."""

    name = "dqn"
    Config = DQNConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {**DQN_PRESETS, **ATARI_100K_PRESETS}
    saved = ("q", "q_target", "optimizer")
    population = QPopulation  # `--seeds 1-8 --vectorize`: the seeds' runs as one stacked population

    def __init__(self, config: DQNConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        if config.augment != "none" and not self.images:
            self.env.close()
            raise LabError(f"--augment {config.augment} shifts images; {ctx.env_id} has vector observations, "
                           "so leave --augment out")
        self.num_actions = int(self.action_space.n)
        self.head = config.return_head()
        self.q = self.make_q_network().to(ctx.device)  # moves the head (and C51's support) too
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = adam(self.q.parameters(), config.learning_rate, ctx.device, eps=config.adam_eps)
        self.noise_generator = ctx.generator("noise") if config.noisy else None
        self.augment_generator = ctx.generator("augment") if config.augment != "none" else None
        # DrQ(eps) copies the target after every update (tau 1, interval 1): at each gradient
        # step it holds the online weights, so the online pass over the next observations is
        # also the target's (the same numbers, one batch pass fewer). Noisy layers draw each
        # network its own noise, and several gradient steps per copy move the online net on.
        self.target_is_online = (config.tau == 1.0 and config.target_update_interval == 1 and not config.noisy
                                 and self.steps_per_training == 1 and config.num_envs <= config.train_freq)
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
        """Q(s, .): the Nature CNN for frames, an MLP for vectors, with `self.head` (a subclass
        may return its own network holding that head: `outputs` gives the head's numbers per
        action and `forward` Q-values, as `QNetwork`'s)."""
        c = self.config
        return QNetwork(tuple(self.observation_space.shape), self.num_actions, c.net_arch, c.dueling,
                        dueling_hidden=c.dueling_hidden, head=self.head,
                        noisy_sigma=c.noisy_sigma if c.noisy else None)

    # ------------------------------------------------------------------ acting

    def epsilon(self) -> float:
        """SB3's exploration: random play until learning starts, then linear from the
        initial to the final epsilon over exploration_fraction of the run (from step 0)."""
        c = self.config
        if self.global_step < c.learning_starts:
            return 1.0
        if c.noisy:  # the noise explores (Hessel et al. 2018: epsilon 0)
            return 0.0
        schedule = linear(c.exploration_initial_eps, c.exploration_final_eps,
                          c.exploration_fraction * self.ctx.total_steps)
        return schedule(self.global_step)

    def epsilon_greedy(self, obs: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
        n = obs.shape[0]
        device = obs.device
        random_actions, explore = epsilon_draws(n, self.num_actions, epsilon, generator, device)
        # On a CPU, skip the forward pass when no env acts greedily; a GPU runs it rather than wait on the check.
        if explore is None or (device.type == "cpu" and bool(explore.all())):
            return random_actions
        with small_pass_threads(n, device):
            greedy = self.greedy(obs)
        return torch.where(explore, random_actions, greedy)

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.q(obs).argmax(dim=1)

    def exploration_action(self, obs: torch.Tensor) -> torch.Tensor:
        if self.noise_generator is not None:  # new noise for every acting step
            resample_noise(self.q, self.noise_generator)
        return self.epsilon_greedy(obs, self.epsilon(), self.action_generator)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Evaluation policy (greedy up to `eval_exploration_eps`, noisy nets at their mean
        weights) or the training policy."""
        if not deterministic:
            return self.exploration_action(obs)
        if self.config.noisy:  # the next training use draws new noise first
            remove_noise(self.q)
        return self.epsilon_greedy(obs, self.config.eval_exploration_eps, self.ctx.rng.eval_generator(obs.device))

    def progress_metrics(self) -> dict[str, float]:
        return {"train/epsilon": self.epsilon()}

    # ---------------------------------------------------------------- learning

    def replay_beta(self) -> float | None:
        """Prioritized replay's importance-sampling exponent now (None: uniform replay)."""
        c = self.config
        return linear(c.prioritized_replay_beta, 1.0, self.ctx.total_steps)(self.global_step) \
            if c.prioritized_replay else None

    def gradient_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        batch = self.buffer.sample(c.batch_size, beta=self.replay_beta())
        observations, next_observations = batch.observations, batch.next_observations
        if self.augment_generator is not None:  # DrQ: each its own shifts
            observations, next_observations = self.augmented(observations), self.augmented(next_observations)
        if self.noise_generator is not None:  # new noise for every gradient step, each network its own
            resample_noise(self.q, self.noise_generator)
            resample_noise(self.q_target, self.noise_generator)
        loss, td_errors = self.compiled_td_loss(observations, batch.actions, batch.rewards, batch.discounts,
                                                batch.dones, next_observations, batch.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q.parameters(), c.max_grad_norm)
        self.optimizer.step()
        if c.prioritized_replay:
            self.buffer.update_priorities(batch.indices, td_errors)
        return {"train/loss": loss.detach()}

    def augmented(self, images: torch.Tensor) -> torch.Tensor:
        """`--augment`: drawn from the run's "augment" stream, so a resumed run draws the same."""
        images = random_shift(images, 4, self.augment_generator)
        if self.config.augment == "shift-intensity":
            images = random_intensity(images, 0.05, self.augment_generator)
        return images

    def td_loss(self, observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                discounts: torch.Tensor, dones: torch.Tensor, next_observations: torch.Tensor,
                weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(importance-weighted loss, per-sample priorities): the part of a step torch.compile
        fuses, and the method a variant with its own loss replaces. The next action is the
        argmax of expected values (the online net's with --double-q); the return head gives
        the n-step target for its outputs and the loss: Huber on TD errors, or with
        --distributional C51's cross-entropy to the projected target or QR-DQN's quantile
        Huber loss, whose per-sample values are the priorities (Hessel et al. 2018)."""
        atoms = self.head.atoms  # (written for any leading dimensions: a population's members too)
        taken = chosen(self.q.outputs(observations), actions, atoms)  # (B,) or (B, N)
        with torch.no_grad():
            next_outputs = (self.q if self.target_is_online else self.q_target).outputs(next_observations)
            next_q = self.q(next_observations) if self.config.double_q and not self.target_is_online \
                else self.head.q_values(next_outputs)
            targets = self.head.targets(rewards, discounts, dones, chosen(next_outputs, next_q.argmax(dim=-1), atoms))
        losses, priorities = self.head.losses(taken, targets)
        return (weights * losses).mean(-1), priorities

    def after_training_step(self, before: int) -> None:
        if crossings(before, self.global_step, self.config.target_update_interval):
            soft_update(self.q_target, self.q, self.config.tau)


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    register(DQN)
