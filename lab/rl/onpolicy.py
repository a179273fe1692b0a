"""What every on-policy agent shares: settings, the rollout loop, checkpoints, acting.

`OnPolicyAgent` owns the training env, the actor-critic (`lab.rl.policies`), the optional
observation/reward normalisation (`lab.rl.normalize`) and the shared `RolloutBuffer` (GAE).
One `train_step` collects `n_steps` vector steps, computes advantages and returns, and
takes gradient steps on the filled buffer as the subclass's `update_plan()` says (passes,
minibatch size, a KL limit), each on its `loss()` of one minibatch: the algorithm itself
(`reinforce`, `a2c`, `ppo` in plugins/). Because the loss is a function of one agent's
batch, a population of agents (`lab.rl.population`) maps the same loss over its members.
Hyperparameters keep Stable-Baselines3's names.

Under torchrun every process steps its share of `num_envs` (a global count) into its own
buffer; `clip_and_step` averages the gradients over the processes before clipping, so every
subclass is data-parallel without a line of its own; the normalisation statistics are merged
after each rollout, and `minibatches` cuts every rank's rollout into the same number of
minibatches (docs/scale.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch
from torch import nn

from lab import distributed
from lab.api import Agent, check_ranges, option
from lab.buffers import RolloutBuffer
from lab.buffers.rollout import RolloutBatch
from lab.device import small_pass_threads
from lab.rl.normalize import Normalizer, RunningMeanStd
from lab.rl.policies import ActorCritic, PolicyStep
from lab.schedules import anneal


@dataclass
class OnPolicyConfig:
    """Settings every on-policy agent takes (SB3's names; defaults are SB3's PPO ones)."""

    learning_rate: float = option(3e-4, "optimizer learning rate")
    anneal_lr: bool = option(False, "anneal the learning rate linearly to 0 (RL Zoo's lin_)")
    n_steps: int = option(2048, "steps per env per rollout")
    gamma: float = option(0.99, "discount factor")
    gae_lambda: float = option(0.95, "GAE lambda")
    ent_coef: float = option(0.0, "entropy bonus weight")
    vf_coef: float = option(0.5, "value loss weight")
    max_grad_norm: float = option(0.5, "gradient clipping norm")
    normalize_advantage: bool = option(True, "standardise advantages per minibatch")
    num_envs: int = option(1, "parallel envs")
    net_arch: tuple[int, ...] = option((64, 64), "MLP widths of the actor and of the critic")
    activation: Literal["tanh", "relu"] = option("tanh", "MLP activation")
    ortho_init: bool = option(True, "orthogonal initialisation (OpenAI baselines' gains)")
    log_std_init: float = option(0.0, "initial log std of the Gaussian policy (Box actions)")
    norm_obs: bool = option(False, "normalise observations by running statistics")
    norm_reward: bool = option(False, "scale rewards by the running std of the return")
    async_envs: bool = option(False, "step the training envs in worker processes (all cores step envs; not for Atari, "
        "whose envs are threaded already; a resumed run restarts them)")
    eval_stochastic: bool | None = option(None, "sample actions when evaluating (default: on image observations, as RL Zoo "
        "and CleanRL evaluate Atari: a greedy policy can stall after a lost life)")

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("n_steps", "num_envs", "net_arch"),
                     positive=("learning_rate", "max_grad_norm"), fraction=("gamma", "gae_lambda"),
                     non_negative=("ent_coef", "vf_coef"))


@dataclass(frozen=True)
class UpdatePlan:
    """How an update walks the rollout: `epochs` passes of shuffled minibatches of
    `batch_size` transitions (None: the whole rollout in its order, one step a pass); a pass
    ends before a minibatch whose approximate KL (`loss`'s "approx_kl") exceeds `kl_limit`."""

    epochs: int = 1
    batch_size: int | None = None
    kl_limit: float | None = None


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target): how much of the returns the critic explains."""
    variance = target.var()
    return float("nan") if variance == 0 else float(1 - (target - predicted).var() / variance)


def merge_statistics(stats: RunningMeanStd, start: tuple[torch.Tensor, ...]) -> None:
    """Make every rank's `stats` what one process would have from all the ranks' data.

    Every rank started from the same `start` (mean, var, count) and added its own batches
    since; the ranks' additions are summed as moments about the start's mean (numerically
    stable), in one all-reduce.
    """
    mean0, var0, count0 = start
    delta = stats.mean - mean0
    moments = torch.cat([stats.count.view(1), (stats.count * delta).reshape(-1),
                         (stats.count * (stats.var + delta.square())).reshape(-1)])
    total = distributed.all_reduce_sum(moments)
    others = distributed.world_size() - 1  # the start is in every rank's sums: count it once
    size = delta.numel()
    count = total[0] - others * count0
    shift = total[1 : 1 + size].view_as(delta) / count
    second = (total[1 + size :].view_as(delta) - others * count0 * var0) / count
    stats.mean, stats.var, stats.count = mean0 + shift, (second - shift.square()).clamp_min(0.0), count


class OnPolicyAgent(Agent):
    """Rollouts into the shared buffer; subclasses implement `make_optimizer` and `update`."""

    default_steps: ClassVar[int] = 1_000_000

    @classmethod
    def step_multiple(cls, config: OnPolicyConfig) -> int:
        """A whole rollout, `n_steps * num_envs`: updates follow whole rollouts, so budgets
        are rounded up to it."""
        return config.n_steps * config.num_envs  # updates follow whole rollouts

    data_parallel: ClassVar[bool] = True  # torchrun: each process its envs, gradients averaged

    def __init__(self, config: OnPolicyConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        asynchronous = {"asynchronous": True} if config.async_envs else {}
        self.num_envs = distributed.split(config.num_envs, "--num-envs") if ctx.world_size > 1 else config.num_envs
        self.env = ctx.make_env(num_envs=self.num_envs, **asynchronous)
        obs_space, action_space = self.env.single_observation_space, self.env.single_action_space
        self.policy = ActorCritic(obs_space, action_space, config.net_arch, config.log_std_init,
                                  activation=nn.ReLU if config.activation == "relu" else nn.Tanh,
                                  ortho_init=config.ortho_init).to(ctx.device)
        self.optimizer = self.make_optimizer()
        images = len(obs_space.shape) == 3
        self.normalizer = Normalizer(tuple(obs_space.shape), self.num_envs, ctx.device,
                                     obs=config.norm_obs and not images, reward=config.norm_reward, gamma=config.gamma)
        continuous = isinstance(action_space, gym.spaces.Box)
        self.buffer = RolloutBuffer(
            config.n_steps, self.num_envs, tuple(obs_space.shape), tuple(action_space.shape) if continuous else (),
            ctx.device, observation_dtype=torch.uint8 if images else torch.float32,
            action_dtype=torch.float32 if continuous else torch.int64,
        )
        self.action_generator = ctx.generator("actions")
        self.minibatch_generator = ctx.generator("minibatches")
        self.synced_statistics = self.statistics()  # what every rank's normaliser holds alike
        self.obs = self.normalizer.obs(self.env.reset(), update=True)
        self.autoreset = torch.zeros(self.num_envs, dtype=torch.bool, device=ctx.device)
        self.same_weights = ctx.world_size == 1  # ranks take rank 0's weights at their first step
        self.valid_counts: torch.Tensor | None = None  # several processes: each rank's real transitions

    @property
    def cpu_threads(self) -> int | None:
        """1 for MLP policies (their ops are too small to split over threads); torch's default
        for image policies."""
        return None if self.policy.images else 1  # MLP policies: ops too small to split

    # -------------------------------------------------------------- the algorithm

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam with eps 1e-5, as SB3's actor-critic policies use (A2C overrides it); fused into
        one kernel where torch has it (CPU, CUDA): the per-tensor loop was a third of a small
        policy's update."""
        fused = self.ctx.device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.policy.parameters(), lr=self.config.learning_rate, eps=1e-5, fused=fused)

    def update_plan(self) -> UpdatePlan:
        """How this update walks the rollout; the default is one gradient step on all of it
        (`a2c`, `reinforce`). Called once per update, before its steps."""
        return UpdatePlan()

    def plan_metrics(self) -> dict[str, float]:
        """What the update plan chose, logged with each update (ppo's clip range)."""
        return {}

    def loss(self, policy: ActorCritic, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The algorithm: the loss of one minibatch and the statistics to log (without
        "train/"). `policy` is this agent's, or one member's of a population: use it, not
        `self.policy`, and take means with `batch.mean` (a population pads its batches)."""
        raise NotImplementedError

    def update(self) -> dict[str, float]:
        """Gradient steps on `loss` over the filled `self.buffer` as `update_plan()` says; the
        mean of each statistic over the steps taken, as "train/NAME"."""
        plan = self.update_plan()
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        for _ in range(plan.epochs):
            batches = self.minibatches(plan.batch_size) if plan.batch_size else iter([self.whole_rollout()])
            stop = False
            for batch in batches:
                loss, values = self.loss(self.policy, batch)
                if plan.kl_limit is not None:  # several processes stop together, on their mean
                    if float(distributed.all_reduce_mean(values["approx_kl"])) > plan.kl_limit:
                        stop = True  # SB3: this minibatch takes no step, the update ends here
                        break
                self.clip_and_step(loss)
                for key, value in values.items():
                    stats[key].append(value.detach())
            if stop:
                break
        metrics = {f"train/{key}": float(torch.stack(values).mean()) for key, values in stats.items()}
        return {**metrics, **self.plan_metrics()}

    def whole_rollout(self) -> RolloutBatch:
        """Every real transition of the rollout as one batch."""
        return next(self.buffer.minibatches(self.buffer.num_steps * self.buffer.num_envs))

    def learning_rate(self) -> float:
        """The learning rate at this step: `learning_rate`, annealed linearly to 0 over the
        run's horizon (`ctx.total_steps`) with `anneal_lr`."""
        return anneal(self.config.learning_rate, self.ctx.total_steps, self.config.anneal_lr)(self.global_step)

    # ------------------------------------------------------------ the rollout loop

    def collect_rollout(self) -> None:
        """`n_steps` vector steps with the current policy into the buffer, then GAE."""
        self.buffer.reset()
        self.valid_counts = None
        with torch.no_grad(), small_pass_threads(self.env.num_envs, self.ctx.device):
            for _ in range(self.config.n_steps):
                self.ctx.check_stop()  # a long rollout stops within seconds of a signal (nothing of it is kept)
                self.env_step(self.policy.step(self.obs, self.action_generator))
            self.end_rollout(self.policy.value(self.obs))

    def env_step(self, step: PolicyStep) -> None:
        """Play `step`'s actions in the envs and record the transition."""
        raw_obs, reward, terminated, truncated, _ = self.env.step(self.policy.to_env(step.actions))
        done = terminated | truncated
        reward = self.normalizer.reward(reward, done, ~self.autoreset)
        self.buffer.add(self.obs, step.actions, step.log_probs, step.values, reward, terminated, truncated)
        self.obs = self.normalizer.obs(raw_obs, update=True)
        self.autoreset = done

    def end_rollout(self, last_values: torch.Tensor) -> None:
        """GAE from V(observation after the last step), then (several processes) merge the
        normalisers' statistics."""
        self.buffer.compute_returns_and_advantage(last_values, self.config.gamma, self.config.gae_lambda)
        self.merge_statistics()

    def statistics(self) -> list[tuple[torch.Tensor, ...]]:
        """(mean, var, count) of the observation and return normalisers, as merged last."""
        return [(s.mean, s.var, s.count) for s in (self.normalizer.obs_stats, self.normalizer.return_stats)]

    def merge_statistics(self) -> None:
        """Several processes: merge what each rank's normaliser saw in this rollout (one process: nothing)."""
        if self.ctx.world_size > 1 and (self.normalizer.normalize_obs or self.normalizer.normalize_reward):
            normalisers = (self.normalizer.obs_stats, self.normalizer.return_stats)
            for stats, start in zip(normalisers, self.synced_statistics, strict=True):
                merge_statistics(stats, start)
            self.obs = self.normalizer.obs(self.env.obs)  # as a run resumed from this step sees it
        self.synced_statistics = self.statistics()

    def minibatches(self, batch_size: int) -> Iterator[RolloutBatch]:
        """Shuffled minibatches of the rollout, `batch_size` transitions each (the last may be smaller).

        Several processes: `batch_size` counts all of them; each rank cuts its own transitions
        into as many minibatches as one process would cut all of them into, so the ranks take
        their gradient steps together (autoreset steps, left out, differ between the ranks).
        """
        for batch in self._rank_minibatches(batch_size):
            self.ctx.check_stop()  # thousands of minibatches (a large rollout): a stop ends the update within seconds
            yield batch

    def _rank_minibatches(self, batch_size: int) -> Iterator[RolloutBatch]:
        buffer = self.buffer
        if self.ctx.world_size == 1:
            yield from buffer.minibatches(batch_size, self.minibatch_generator)
            return
        whole = next(buffer.minibatches(buffer.num_steps * buffer.num_envs, self.minibatch_generator))
        if self.valid_counts is None:  # once per rollout: every rank's real transitions
            self.valid_counts = distributed.all_gather_cat(torch.tensor([len(whole.actions)]))
        counts = self.valid_counts
        chunks = max(1, min(-(-int(counts.sum()) // batch_size), int(counts.min())))
        parts = [tensor.tensor_split(chunks) for tensor in whole[:6]]
        for i in range(chunks):
            yield RolloutBatch(*(part[i] for part in parts))

    def train_step(self) -> dict[str, float]:
        """Collect one rollout (GAE included), then `update()` at this step's learning rate;
        advances `global_step` by the rollout's steps over all processes."""
        if not self.same_weights:  # identical weights on every rank, whatever each process built
            distributed.broadcast_module(self.policy)
            self.same_weights = True
        self.collect_rollout()
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return self.updated(self.update(), lr)

    def updated(self, metrics: dict[str, float], lr: float) -> dict[str, float]:
        """After an update at learning rate `lr`: advance `global_step` by the rollout and add
        what every on-policy agent logs to the update's `metrics`."""
        self.global_step += self.config.n_steps * self.num_envs * self.ctx.world_size  # every process's steps
        valid = self.buffer.valid
        metrics["train/learning_rate"] = lr
        metrics["train/explained_variance"] = explained_variance(self.buffer.values[valid], self.buffer.returns[valid])
        if self.policy.continuous:
            metrics["train/std"] = float(self.policy.log_std.detach().exp().mean())
        return metrics

    def policy_gradient_loss(self, policy: ActorCritic,
                             batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The vanilla actor-critic loss that `a2c` and `reinforce` share:

            -mean(A_t log pi(a_t|s_t)) + vf_coef mean((G_t - V(s_t))^2) - ent_coef mean(H(pi(.|s_t)))

        with A_t the rollout's GAE advantages (REINFORCE's G_t - V(s_t) when lambda is 1),
        standardised when `normalize_advantage`."""
        c = self.config
        out, values = policy(batch.observations)
        advantages = batch.standardized(batch.advantages) if c.normalize_advantage else batch.advantages
        policy_loss = -batch.mean(advantages * policy.log_prob(out, batch.actions))
        value_loss = batch.mean((batch.returns - values).square())
        entropy_loss = -batch.mean(policy.entropy(out))
        loss = policy_loss + c.ent_coef * entropy_loss + c.vf_coef * value_loss
        return loss, {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss,
                      "entropy_loss": entropy_loss}

    def clip_and_step(self, loss: torch.Tensor) -> None:
        """Backward, average the gradients over torchrun's processes, clip to `max_grad_norm`,
        step: the one place subclasses' updates go through, which makes them data-parallel."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.policy.parameters())  # several processes: their mean gradient
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm, foreach=True)
        self.optimizer.step()

    # -------------------------------------------------------------------- acting

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Raw env observations in, env-ready actions out (normalised with the saved statistics).

        `deterministic=True` is the evaluation policy: the mode, or a sample where
        `eval_stochastic` asks for one (by default on image observations)."""
        generator = self.ctx.rng.eval_generator(obs.device) if deterministic else self.action_generator
        sample = self.config.eval_stochastic
        if sample is None:
            sample = self.policy.images
        with torch.no_grad():
            return self.policy.act(self.normalizer.obs(obs), deterministic and not sample, generator)

    # --------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Per-env tensors hold all `num_envs` envs, whatever the number of processes (under
        torchrun every rank must call this together: the ranks' envs are gathered)."""
        normalizer = self.normalizer.state_dict()
        normalizer["returns"] = distributed.all_gather_cat(normalizer["returns"])
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "normalizer": normalizer,
            "global_step": self.global_step,
            "autoreset": distributed.all_gather_cat(self.autoreset),
            "episode_ended": distributed.all_gather_cat(self.buffer.episode_ended),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore after the runner restored the envs; restarted envs begin new episodes."""
        mine = slice(self.ctx.rank * self.num_envs, (self.ctx.rank + 1) * self.num_envs)  # this rank's envs
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.normalizer.returns = self.normalizer.returns[mine]
        self.synced_statistics = self.statistics()
        self.global_step = int(state["global_step"])
        self.obs = self.normalizer.obs(self.env.obs)
        if self.env.restarted:
            self.autoreset = torch.zeros_like(self.autoreset)
            self.normalizer.returns.zero_()
            self.buffer.episode_ended = torch.zeros_like(self.buffer.episode_ended)
        else:
            self.autoreset = state["autoreset"][mine].to(self.autoreset.device)
            self.buffer.episode_ended = state["episode_ended"][mine].to(self.buffer.device)

    def close(self) -> None:
        """Close the training env."""
        self.env.close()
