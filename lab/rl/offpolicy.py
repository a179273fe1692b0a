"""What every off-policy agent shares: settings, the acting loop, replay, targets, checkpoints.

`OffPolicyAgent` owns the training env, the replay buffer (built from the env's spaces:
image observations stay uint8 and are stored once per frame, vector observations float32;
discrete actions int64, continuous ones float32 in [-1, 1]) and the loop of one
`train_step`: act (uniformly at random until `learning_starts`, then the subclass's
exploration policy), step the envs, store the transition, and every `train_freq` agent
steps take `gradient_steps` gradient steps (the subclass's `gradient_step`, the algorithm
itself: `dqn`, `sac`, `td3` in plugins/). `train_freq`, `learning_starts` and target
intervals count agent steps summed over all envs, so the replay ratio (gradient steps x
batch size per agent step) does not change with `--num-envs`.

A subclass names the modules and optimizers it keeps (`saved`): the service checkpoints
them with the replay contents and its own counters, so a resumed run continues exactly
(the replay's open episodes are closed when the envs had to restart). Acting passes over a
few observations run on one CPU thread (`lab.device.small_pass_threads`). Hyperparameter
names are SB3's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import torch
from torch import nn

from lab.api import Agent, LabError, Pace, check_ranges, option
from lab.buffers import ReplayBuffer
from lab.device import small_pass_threads
from lab.rl.actors import ActionScale, box_actions

# A warm-up shorter than this many steps passes before an ETA could be wrong for long.
PACE_MIN_WARMUP = 1_000


@dataclass
class OffPolicyConfig:
    """Settings every off-policy agent takes (SB3's names; each agent sets its own defaults)."""

    learning_rate: float = option(3e-4, "Adam learning rate")
    buffer_size: int = option(1_000_000, "replay capacity in transitions")
    learning_starts: int = option(100, "agent steps of random actions before learning")
    batch_size: int = option(256, "transitions per gradient step")
    tau: float = option(0.005, "target network update coefficient (1: hard copy)")
    gamma: float = option(0.99, "discount factor")
    train_freq: int = option(1, "agent steps between trainings")
    gradient_steps: int = option(1, "gradient steps per training (-1: one per agent step)")
    num_envs: int = option(1, "parallel envs")
    net_arch: tuple[int, ...] = option((256, 256), "MLP widths of the networks")
    checkpoint_replay_buffer: bool = option(True, "save the replay buffer with checkpoints")

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("buffer_size", "batch_size", "train_freq", "num_envs", "net_arch"),
                     positive=("learning_rate",), fraction=("tau", "gamma"), non_negative=("learning_starts",))
        if self.gradient_steps == 0 or self.gradient_steps < -1:
            raise ValueError(f"--gradient-steps must be >= 1 or -1, got {self.gradient_steps}")


def crossings(before: int, after: int, interval: int) -> int:
    """How many multiples of `interval` lie in (before, after]."""
    return after // interval - before // interval


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau online, in one fused call (tau 1: a hard copy)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def adam(parameters: Iterable[torch.nn.Parameter], lr: float, device: torch.device, **kwargs: Any) -> torch.optim.Adam:
    """Adam as one fused kernel per step where torch has it (CPU, CUDA): cheaper small updates."""
    return torch.optim.Adam(parameters, lr=lr, fused=device.type in ("cpu", "cuda"), **kwargs)


def mean_metrics(steps: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each metric's mean over the gradient steps that logged it (TD3's actor loss: some steps)."""
    metrics = {}
    for name in dict.fromkeys(name for step in steps for name in step):
        values = [step[name] for step in steps if name in step]
        metrics[name] = torch.stack(values).mean() if len(values) > 1 else values[0]
    return metrics


class OffPolicyAgent(Agent):
    """Replay, the acting loop and gradient-step scheduling; subclasses implement the learning.

    A subclass sets `saved` (attribute names of the modules and optimizers to checkpoint)
    and implements `exploration_action(obs)` (the training policy after learning starts,
    in the buffer's action units), `gradient_step()` (one update; returns metrics as
    tensors, averaged by the runner at log rows) and `act`; optionally `random_actions`,
    `env_actions` (buffer units to the env's) and `after_training_step` (target updates
    on their own interval).
    """

    default_steps: ClassVar[int] = 1_000_000
    saved: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def step_multiple(cls, config: OffPolicyConfig) -> int:
        return config.num_envs

    def __init__(self, config: OffPolicyConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.env = ctx.make_env(num_envs=config.num_envs)
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.check_action_space(self.action_space)
        self.images = len(self.observation_space.shape) == 3
        self.action_generator = ctx.generator("actions")
        # `lab eval` only acts: no replay memory (7 GB for 1M Atari transitions) is allocated
        self.buffer: ReplayBuffer | None = self.make_buffer() if ctx.training else None
        self.obs = self.env.reset()
        self._pace: Pace | None = None

    # ------------------------------------------------------------------ set-up

    def check_action_space(self, space: gym.Space) -> None:
        """Refuse (one LabError) an action space the algorithm cannot act in."""

    def buffer_options(self) -> dict[str, Any]:
        """Extra ReplayBuffer arguments (DQN: n-step returns, prioritized replay)."""
        return {}

    def make_buffer(self) -> ReplayBuffer:
        """A replay buffer shaped by the env's spaces: frames stored once, floats as float32."""
        c = self.config
        obs_shape = tuple(self.observation_space.shape)
        frame_stack = int(getattr(self.env, "frame_stack", 1))
        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        return ReplayBuffer(
            c.buffer_size, obs_shape, c.num_envs, self.ctx.device, frame_stack=frame_stack,
            action_shape=() if discrete else tuple(self.action_space.shape),
            action_dtype=torch.int64 if discrete else torch.float32, gamma=c.gamma,
            generator=self.ctx.generator("replay"),
            observation_dtype=torch.uint8 if frame_stack > 1 or self.images else torch.float32,
            **self.buffer_options(),
        )

    @property
    def cpu_threads(self) -> int | None:
        return None if self.images else 1  # an MLP's ops are too small to split (CartPole: 1.45x faster)

    @property
    def steps_per_training(self) -> int:
        """Gradient steps each training does (`gradient_steps`, or one per agent step for -1)."""
        c = self.config
        return c.gradient_steps if c.gradient_steps > 0 else c.train_freq

    def gradient_steps_in_run(self) -> int:
        c = self.config
        return max(0, self.ctx.total_steps - c.learning_starts) // c.train_freq * self.steps_per_training

    # ------------------------------------------------------------------ acting

    def random_actions(self, n: int) -> torch.Tensor:
        """Uniform actions in the buffer's units (before learning starts)."""
        device = self.ctx.device
        if isinstance(self.action_space, gym.spaces.Discrete):
            return torch.randint(0, int(self.action_space.n), (n,), generator=self.action_generator, device=device)
        shape = (n, *self.action_space.shape)
        return torch.rand(shape, generator=self.action_generator, device=device) * 2 - 1

    def exploration_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The training policy's actions for `obs`, in the buffer's units."""
        raise NotImplementedError

    def env_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Buffer units -> what the env takes (continuous agents scale [-1, 1] to the box)."""
        return actions

    def collect(self) -> torch.Tensor:
        """One vector step of all envs into the replay buffer; returns the actions taken."""
        if self.global_step < self.config.learning_starts:
            actions = self.random_actions(self.env.num_envs)
        else:
            with torch.no_grad(), small_pass_threads(self.env.num_envs, self.ctx.device):
                actions = self.exploration_action(self.obs)
        return self.step_envs(actions)

    def step_envs(self, actions: torch.Tensor) -> torch.Tensor:
        """Step the envs with `actions` (buffer units) and store the transitions; returns them."""
        next_obs, rewards, terminated, truncated, _ = self.env.step(self.env_actions(actions))
        self.buffer.add(self.obs, actions, rewards, next_obs, terminated, truncated)
        self.obs = next_obs
        return actions

    # ---------------------------------------------------------------- learning

    def gradient_step(self) -> dict[str, torch.Tensor]:
        """One update from a replay sample; metrics as tensors (no host sync per step)."""
        raise NotImplementedError

    def progress_metrics(self) -> dict[str, float]:
        """Metrics of the acting side logged every step (DQN: its epsilon)."""
        return {}

    def after_training_step(self, before: int) -> None:
        """After each `train_step` (global_step moved on from `before`): target updates."""

    def buffer_ready(self) -> bool:
        """Learning needs min(learning_starts, capacity) stored transitions: a run resumed
        without its replay buffer refills it first, as a fresh run would."""
        wanted = max(min(self.config.learning_starts, self.buffer.capacity),
                     (self.buffer.n_step + 2) * self.config.num_envs)
        return len(self.buffer) >= wanted

    def advance(self) -> int:
        """Count the agent steps of one vector step; returns the global step before it."""
        before, self.global_step = self.global_step, self.global_step + self.config.num_envs
        return before

    def gradient_steps_due(self, before: int) -> int:
        """How many gradient steps the agent steps since `before` call for."""
        c = self.config
        if self.global_step <= c.learning_starts or not self.buffer_ready():
            return 0
        return crossings(before, self.global_step, c.train_freq) * self.steps_per_training

    def train_step(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.progress_metrics()
        self.collect()
        before = self.advance()
        steps = []
        for _ in range(self.gradient_steps_due(before)):
            self.ctx.check_stop()  # (a --train-freq of 100k: as many gradient steps in one train_step)
            steps.append(self.gradient_step())
        metrics.update(mean_metrics(steps))
        self.after_training_step(before)
        if self._pace is None and self.config.learning_starts - self.global_step >= PACE_MIN_WARMUP \
                and len(self.buffer) >= 2 * self.config.batch_size:
            self._pace = self.measure_pace()
        return metrics

    def pace(self) -> Pace | None:
        return self._pace if self._pace is not None and self.global_step < self.config.learning_starts else None

    def measure_pace(self) -> Pace:
        """What each step costs once learning starts beyond a warm-up step: the policy's
        acting pass and the update's share, timed on the real networks and replay, then
        everything put back (modules, optimisers, counters, random streams, priorities):
        the run computes the same with or without it."""
        c = self.config
        saved = copy.deepcopy({k: v for k, v in self.state_dict().items() if k != "buffers"})
        streams = copy.deepcopy(self.ctx.rng.state_dict())

        def seconds(work: Callable[[], Any], repeats: int = 3) -> float:
            work()  # the first call pays for allocation (and compiling, with --compile)
            sync = torch.cuda.synchronize if self.ctx.device.type == "cuda" else (lambda: None)
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                work()
            sync()
            return (time.perf_counter() - start) / repeats

        def act() -> None:
            with torch.no_grad(), small_pass_threads(self.env.num_envs, self.ctx.device):
                self.exploration_action(self.obs)

        with self.buffer.unchanged():
            acting, update = seconds(act), seconds(self.gradient_step)
        self.load_state_dict(saved)
        self.ctx.rng.load_state_dict(streams)
        extra = acting / c.num_envs + update * self.steps_per_training / c.train_freq
        return Pace(c.learning_starts, extra)

    # ------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in self.saved}
        state["global_step"] = self.global_step
        if self.config.checkpoint_replay_buffer and self.buffer is not None:
            state["buffers"] = self.buffer.state_dict()  # best.pt leaves this key out
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore after the runner restored the envs: continue their episodes, or close the
        stored ones when the envs had to start new games."""
        for name in self.saved:
            getattr(self, name).load_state_dict(state[name])
        self.global_step = int(state["global_step"])
        self.obs = self.env.obs
        if "buffers" in state and self.buffer is not None:
            self.buffer.load_state_dict(state["buffers"], end_episodes=self.env.restarted)

    def close(self) -> None:
        self.env.close()


class ContinuousOffPolicyAgent(OffPolicyAgent):
    """An off-policy agent for a bounded 1-D Box: actions in [-1, 1] inside the agent (the
    replay buffer, the critics, the exploration noise), scaled to the env's box on the way
    out (`self.scale`); counts its gradient steps in `self.updates` (delays and intervals)."""

    def __init__(self, config: OffPolicyConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.obs_dim, self.action_dim = int(self.observation_space.shape[0]), int(self.action_space.shape[0])
        self.scale = ActionScale(self.action_space).to(ctx.device)
        self.updates = 0

    @property
    def cpu_threads(self) -> int | None:
        # every core for the update: batch-256 matmuls of 256-unit layers split well (HalfCheetah,
        # 2 cores: 9 ms a gradient step on two threads, 14 on one); acting passes stay on one
        return None

    def check_action_space(self, space: gym.Space) -> None:
        try:
            box_actions(space, self.name)
        except LabError:
            self.env.close()
            raise

    def env_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.scale.to_env(actions)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.updates = int(state["updates"])
