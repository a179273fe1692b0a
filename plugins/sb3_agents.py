"""`sb3-dqn`, `sb3-ppo`, `sb3-a2c`: Stable-Baselines3's algorithms as lab agents.

Same env factory, run directory, trackers and metric names as the lab's own agents, so
a dashboard shows both side by side. The runner drives SB3 one iteration of its `learn`
loop per `train_step` (a DQN rollout of `train_freq` steps and its gradient steps, or a
PPO/A2C rollout and its update). SB3's logger writes nowhere: its `train/*` values are
returned as this agent's metrics; episode scores come from the lab envs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import gymnasium as gym
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from lab.agent import Agent
from lab.errors import LabError
from lab.hookspecs import hookimpl
from lab.plugins._sb3_env import LabSB3VecEnv
from lab.plugins.dqn import DQN as LabDQN
from lab.plugins.dqn import DQNSettings


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _linear(value: float, anneal: bool) -> float | Callable[[float], float]:
    """SB3 schedule: constant, or linear to 0 over the run (RL Zoo's `lin_` values)."""
    return (lambda progress_remaining: progress_remaining * value) if anneal else value


class SB3Agent(Agent):
    """Shared plumbing: env adapter, silent logger, one learn-loop iteration per step, state."""

    sb3_class: ClassVar[type[BaseAlgorithm]]
    discrete_actions_only: ClassVar[bool] = False

    def __init__(self, config: Any, ctx: Any) -> None:
        super().__init__(config, ctx)
        envs = [ctx.make_env(num_envs=1, seed=ctx.seed + i, **self.env_options) for i in range(config.num_envs)]
        self.venv = LabSB3VecEnv(envs)
        if self.discrete_actions_only and not isinstance(self.venv.action_space, gym.spaces.Discrete):
            self.venv.close()
            raise LabError(f"{self.name} needs discrete actions; {ctx.env_id} has {self.venv.action_space}. "
                           "Use an env with discrete actions (e.g. CartPole-v1, ALE/Breakout-v5)")
        images = len(self.venv.observation_space.shape) == 3
        self.model = self.sb3_class(
            "CnnPolicy" if images else "MlpPolicy", self.venv, device=ctx.device, seed=ctx.seed, verbose=0,
            **self.sb3_kwargs(images),
        )
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        # the run's budget is the schedule horizon (exploration, lr annealing); kept on resume
        _, self.callback = self.model._setup_learn(ctx.total_steps, callback=None, reset_num_timesteps=True)
        self.callback.on_training_start(locals(), globals())

    @property
    def env_options(self) -> dict[str, Any]:
        return {}

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        """Keyword arguments for the SB3 constructor, from the config."""
        raise NotImplementedError

    def learn_iteration(self) -> None:
        """One pass of SB3's `learn` loop body."""
        raise NotImplementedError

    def train_step(self) -> dict[str, float]:
        self.learn_iteration()
        self.global_step = int(self.model.num_timesteps)
        logged = self.model.logger.name_to_value
        metrics = {k: float(v) for k, v in logged.items() if k.startswith("train/") and isinstance(v, (int, float))}
        logged.clear()
        return metrics

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        actions = self.model.policy._predict(obs.to(self.model.device), deterministic=deterministic)
        space = self.venv.action_space
        if isinstance(space, gym.spaces.Box):
            low = torch.as_tensor(space.low, device=actions.device)
            high = torch.as_tensor(space.high, device=actions.device)
            actions = torch.maximum(torch.minimum(actions, high), low)
        return actions

    # ------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "policy": m.policy.state_dict(),
            "optimizer": m.policy.optimizer.state_dict(),
            "num_timesteps": int(m.num_timesteps),
            "total_timesteps": int(m._total_timesteps),
            "n_updates": int(getattr(m, "_n_updates", 0)),
            "n_calls": int(getattr(m, "_n_calls", 0)),
            "episode_num": int(m._episode_num),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = self.model
        m.policy.load_state_dict(state["policy"])
        m.policy.optimizer.load_state_dict(state["optimizer"])
        m.num_timesteps = int(state["num_timesteps"])
        m._total_timesteps = int(state["total_timesteps"])
        m._n_updates = int(state["n_updates"])
        if hasattr(m, "_n_calls"):
            m._n_calls = int(state["n_calls"])
        m._episode_num = int(state["episode_num"])
        m._update_current_progress_remaining(m.num_timesteps, m._total_timesteps)
        self.global_step = m.num_timesteps

    def close(self) -> None:
        self.venv.close()


# ---------------------------------------------------------------------- sb3-dqn


@dataclass
class SB3DQNConfig(DQNSettings):
    lab_replay_buffer: bool = field(default=True, metadata=_help("store transitions in the lab's device replay buffer"))


class SB3DQNAgent(SB3Agent):
    """Stable-Baselines3's DQN (same settings and presets as `dqn`)."""

    name = "sb3-dqn"
    Config = SB3DQNConfig
    sb3_class = DQN
    discrete_actions_only = True
    default_steps = LabDQN.default_steps
    presets = LabDQN.presets

    @property
    def env_options(self) -> dict[str, Any]:
        return self.config.env_options

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        c = self.config
        kwargs: dict[str, Any] = dict(
            learning_rate=c.learning_rate, buffer_size=c.buffer_size, learning_starts=c.learning_starts,
            batch_size=c.batch_size, tau=c.tau, gamma=c.gamma,
            # the lab counts train_freq in agent steps over all envs; SB3 in vector steps
            train_freq=max(1, c.train_freq // c.num_envs),
            gradient_steps=c.gradient_steps, target_update_interval=c.target_update_interval,
            exploration_fraction=c.exploration_fraction, exploration_initial_eps=c.exploration_initial_eps,
            exploration_final_eps=c.exploration_final_eps, max_grad_norm=c.max_grad_norm,
        )
        if not images:
            kwargs["policy_kwargs"] = dict(net_arch=list(c.net_arch))
        if c.lab_replay_buffer:
            from lab.buffers.sb3 import SB3ReplayBuffer

            stack = c.frame_stack if images else 1
            kwargs["replay_buffer_class"] = SB3ReplayBuffer
            kwargs["replay_buffer_kwargs"] = dict(frame_stack=stack, stack_padding="reset", gamma=c.gamma)
        return kwargs

    def __init__(self, config: SB3DQNConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.eval_generator = ctx.generator(offset=3)

    def learn_iteration(self) -> None:
        m: OffPolicyAlgorithm = self.model
        rollout = m.collect_rollouts(m.env, train_freq=m.train_freq, action_noise=m.action_noise,
                                     callback=self.callback, learning_starts=m.learning_starts,
                                     replay_buffer=m.replay_buffer, log_interval=None)
        if m.num_timesteps > 0 and m.num_timesteps > m.learning_starts:
            gradient_steps = m.gradient_steps if m.gradient_steps >= 0 else rollout.episode_timesteps
            if gradient_steps > 0:
                m.train(batch_size=m.batch_size, gradient_steps=gradient_steps)
        self.model.logger.record("train/epsilon", m.exploration_rate)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        greedy = super().act(obs, deterministic=True)
        eps = self.config.eval_exploration_eps if deterministic else self.model.exploration_rate
        if eps <= 0:
            return greedy
        n = obs.shape[0]
        random = torch.randint(0, int(self.venv.action_space.n), (n,), generator=self.eval_generator,
                               device=greedy.device)
        explore = torch.rand(n, generator=self.eval_generator, device=greedy.device) < eps
        return torch.where(explore, random, greedy)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.config.checkpoint_replay_buffer and self.config.lab_replay_buffer:
            state["buffers"] = self.model.replay_buffer.state_dict()  # best.pt leaves this out
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "buffers" in state:
            self.model.replay_buffer.load_state_dict(state["buffers"])
        self.model.exploration_rate = self.model.exploration_schedule(self.model._current_progress_remaining)


# ------------------------------------------------------------- sb3-ppo, sb3-a2c


@dataclass
class OnPolicySettings:
    learning_rate: float = field(default=2.5e-4, metadata=_help("optimizer learning rate"))
    n_steps: int = field(default=128, metadata=_help("steps per env per rollout"))
    gamma: float = field(default=0.99, metadata=_help("discount factor"))
    gae_lambda: float = field(default=0.95, metadata=_help("GAE lambda"))
    ent_coef: float = field(default=0.01, metadata=_help("entropy bonus"))
    vf_coef: float = field(default=0.5, metadata=_help("value loss weight"))
    max_grad_norm: float = field(default=0.5, metadata=_help("gradient clipping norm"))
    num_envs: int = field(default=8, metadata=_help("parallel envs"))
    net_arch: tuple[int, ...] = field(default=(64, 64), metadata=_help("MLP widths for vector observations"))
    anneal: bool = field(default=True, metadata=_help("anneal the learning rate (and PPO clip range) linearly to 0"))
    frame_stack: int = field(default=4, metadata=_help("Atari frames per observation"))
    terminal_on_life_loss: bool = field(default=True, metadata=_help("Atari: a lost life ends the learning episode"))

    def __post_init__(self) -> None:
        for name in ("n_steps", "num_envs", "frame_stack"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    @property
    def env_options(self) -> dict[str, Any]:
        names = ("frame_stack", "terminal_on_life_loss")
        defaults = {f.name: f.default for f in fields(OnPolicySettings) if f.name in names}
        return {n: getattr(self, n) for n in names if getattr(self, n) != defaults[n]}

    def common_kwargs(self, images: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            learning_rate=_linear(self.learning_rate, self.anneal), n_steps=self.n_steps, gamma=self.gamma,
            gae_lambda=self.gae_lambda, ent_coef=self.ent_coef, vf_coef=self.vf_coef,
            max_grad_norm=self.max_grad_norm,
        )
        if not images:
            kwargs["policy_kwargs"] = dict(net_arch=list(self.net_arch))
        return kwargs


class OnPolicyAgent(SB3Agent):
    default_steps = 10_000_000

    @property
    def env_options(self) -> dict[str, Any]:
        return self.config.env_options

    def learn_iteration(self) -> None:
        m = self.model
        m.collect_rollouts(m.env, self.callback, m.rollout_buffer, n_rollout_steps=m.n_steps)
        m._update_current_progress_remaining(m.num_timesteps, m._total_timesteps)
        m.train()


@dataclass
class SB3PPOConfig(OnPolicySettings):
    batch_size: int = field(default=256, metadata=_help("minibatch size"))
    n_epochs: int = field(default=4, metadata=_help("passes over each rollout"))
    clip_range: float = field(default=0.1, metadata=_help("PPO clip range"))


class SB3PPOAgent(OnPolicyAgent):
    """Stable-Baselines3's PPO; defaults are RL Zoo's Atari PPO."""

    name = "sb3-ppo"
    Config = SB3PPOConfig
    sb3_class = PPO
    presets: dict[str, dict[str, Any]] = {
        "CartPole-v1": dict(num_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                            ent_coef=0.0, learning_rate=1e-3, clip_range=0.2),
        "Acrobot-v1": dict(num_envs=16, n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0,
                           anneal=False, learning_rate=3e-4, clip_range=0.2, batch_size=64),
        "Pendulum-v1": dict(num_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0,
                            learning_rate=1e-3, clip_range=0.2, anneal=False, batch_size=64),
    }

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        c = self.config
        return dict(c.common_kwargs(images), batch_size=c.batch_size, n_epochs=c.n_epochs,
                    clip_range=_linear(c.clip_range, c.anneal))


@dataclass
class SB3A2CConfig(OnPolicySettings):
    learning_rate: float = field(default=7e-4, metadata=_help("RMSprop learning rate"))
    n_steps: int = field(default=5, metadata=_help("steps per env per update"))
    gae_lambda: float = field(default=1.0, metadata=_help("GAE lambda (1: plain n-step returns)"))
    vf_coef: float = field(default=0.25, metadata=_help("value loss weight"))
    num_envs: int = field(default=16, metadata=_help("parallel envs"))
    anneal: bool = field(default=False, metadata=_help("anneal the learning rate linearly to 0"))


class SB3A2CAgent(OnPolicyAgent):
    """Stable-Baselines3's A2C; defaults are RL Zoo's Atari A2C."""

    name = "sb3-a2c"
    Config = SB3A2CConfig
    sb3_class = A2C
    presets: dict[str, dict[str, Any]] = {
        "CartPole-v1": dict(num_envs=8, ent_coef=0.0, vf_coef=0.5),
        "Acrobot-v1": dict(num_envs=16, ent_coef=0.0, vf_coef=0.5),
    }

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        kwargs = self.config.common_kwargs(images)
        if images:  # RL Zoo's Atari A2C: RMSprop as in the TF implementation
            from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

            kwargs["policy_kwargs"] = dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))
        return kwargs


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    for agent in (SB3DQNAgent, SB3PPOAgent, SB3A2CAgent):
        register(agent)
