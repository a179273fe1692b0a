"""`sb3-dqn`, `sb3-ppo`, `sb3-a2c`, `sb3-sac`, `sb3-td3`: Stable-Baselines3's algorithms as lab agents.

Same env factory, run directory, trackers and metric names as the lab's own agents, so
a dashboard shows both side by side. The runner drives SB3 one iteration of its `learn`
loop per `train_step` (a DQN rollout of `train_freq` steps and its gradient steps, or a
PPO/A2C rollout and its update). SB3's logger writes nowhere: its `train/*` values are
returned as this agent's metrics; episode scores come from the lab envs. The settings are
the lab's own agents' (`dqn`'s, `ppo`'s, `a2c`'s, `sac`'s, `td3`'s: one name each, mapped onto SB3's
arguments; observation and reward normalisation through SB3's `VecNormalize`); presets are
RL Zoo's tuned values and budgets (every Atari game through `atari`). Checkpoints hold what
SB3 carries between iterations (last observations, episode starts, the action space's
random state, the normalisation statistics), so resume is exact wherever the envs can be
saved. SB3's private members that this needs are named in one place, `internals`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3 import SAC as SB3SAC
from stable_baselines3 import TD3 as SB3TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from lab.api import Agent, LabError, hookimpl, option
from lab.memory import allocating
from lab.plugins.a2c import A2CConfig
from lab.plugins.dqn import DQN_PRESETS, DQNSettings
from lab.plugins.ppo import PPOConfig
from lab.plugins.sac import SAC_PRESETS, SACConfig
from lab.plugins.sb3_agents import internals
from lab.plugins.sb3_agents.env import LabSB3VecEnv
from lab.plugins.td3 import TD3_PRESETS, TD3Config
from lab.rl.actors import box_actions
from lab.rl.onpolicy import OnPolicyConfig
from lab.schedules import anneal, as_progress_schedule


class StopCheck(BaseCallback):
    """`ctx.check_stop()` at every env step of SB3's rollouts: a long one stops within seconds."""

    def __init__(self, check_stop: Callable[[], None]) -> None:
        super().__init__()
        self.check_stop = check_stop

    def _on_step(self) -> bool:
        self.check_stop()
        return True


def check_stop_per_minibatch(model: BaseAlgorithm, check_stop: Callable[[], None]) -> None:
    """`check_stop()` before each minibatch SB3's update takes (from `rollout_buffer.get` or
    `replay_buffer.sample`): a large rollout's update or a --train-freq of 100k gradient steps
    stops within seconds, as the lab's own agents do. The update itself is SB3's, untouched."""
    rollout = getattr(model, "rollout_buffer", None)
    if rollout is not None:
        get = rollout.get

        def checked_get(batch_size: int | None = None) -> Iterator[Any]:
            for batch in get(batch_size):
                check_stop()
                yield batch

        rollout.get = checked_get
    replay = getattr(model, "replay_buffer", None)
    if replay is not None:
        sample = replay.sample

        def checked_sample(*args: Any, **kwargs: Any) -> Any:
            check_stop()
            return sample(*args, **kwargs)

        replay.sample = checked_sample


class SB3Agent(Agent):
    """Shared plumbing: env adapter, silent logger, one learn-loop iteration per step, state."""

    sb3_class: ClassVar[type[BaseAlgorithm]]
    discrete_actions_only: ClassVar[bool] = False

    def __init__(self, config: Any, ctx: Any) -> None:
        super().__init__(config, ctx)
        envs = [ctx.make_env(num_envs=1, seed=ctx.seed + i) for i in range(config.num_envs)]
        self.venv = LabSB3VecEnv(envs)
        if self.discrete_actions_only:
            self.require_discrete_actions(self.venv.action_space, self.venv)
        images = len(self.venv.observation_space.shape) == 3
        try:
            kwargs = self.sb3_kwargs(images)
        except BaseException:
            self.venv.close()
            raise
        what, nbytes, fix = self.buffer_estimate()
        try:
            with allocating(what, nbytes, "cpu", fix):  # SB3's buffers are numpy arrays in host memory
                self.model = self.sb3_class(
                    "CnnPolicy" if images else "MlpPolicy", self.wrap(self.venv), device=ctx.device, seed=ctx.seed,
                    verbose=0, **kwargs,
                )
        except BaseException:
            self.venv.close()
            raise
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        check_stop_per_minibatch(self.model, ctx.check_stop)
        # the run's budget is the schedule horizon (exploration, lr annealing); kept on resume
        self.callback = internals.setup_learn(self.model, ctx.total_steps, StopCheck(ctx.check_stop))
        self.callback.on_training_start(locals(), globals())

    def wrap(self, venv: LabSB3VecEnv) -> Any:
        """The env SB3 trains on (the on-policy agents normalise through VecNormalize)."""
        return venv

    def buffer_estimate(self) -> tuple[str, int, str]:
        """(what, bytes, how to make it smaller) of the buffer SB3 allocates from the settings,
        checked before SB3 allocates it (`lab.memory`)."""
        return "sb3's buffers", 0, "lower --buffer-size or --n-steps"

    def transition_bytes(self) -> int:
        """The bytes SB3 stores of one observation and one action (float32 actions)."""
        space = self.venv.observation_space
        actions = int(np.prod(self.venv.action_space.shape or (1,)))
        return int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize + 4 * actions

    def observations(self, obs: np.ndarray) -> np.ndarray:
        """Raw env observations as the policy sees them."""
        return obs

    @staticmethod
    def schedule(value: float, enabled: bool) -> Callable[[float], float]:
        """RL Zoo's `lin_<value>` (or a constant) over the fraction of the budget SB3 has done,
        holding its final value past the budget (`lab resume --steps` beyond it)."""
        return as_progress_schedule(anneal(value, 1, enabled), 1)

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
        """SB3's `predict`: Box actions clipped to the box, or unscaled to it from [-1, 1] (SAC, TD3)."""
        actions, _ = self.model.policy.predict(self.observations(obs.cpu().numpy()), deterministic=deterministic)
        return torch.as_tensor(actions, device=self.model.device)

    # ------------------------------------------------------------- checkpoints

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer SB3's model steps (SAC and TD3 have one for the actor and one for the critic)."""
        policy = self.model.policy
        if hasattr(policy, "actor") and hasattr(policy, "critic"):
            found = {"actor": policy.actor.optimizer, "critic": policy.critic.optimizer}
            if getattr(self.model, "ent_coef_optimizer", None) is not None:
                found["ent_coef"] = self.model.ent_coef_optimizer
            return found
        return {"policy": policy.optimizer}

    def state_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "policy": m.policy.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
            "num_timesteps": int(m.num_timesteps),
            "total_timesteps": internals.total_timesteps(m),
            "n_updates": internals.n_updates(m),
            "n_calls": internals.n_calls(m),
            "episode_num": internals.episode_num(m),
            "last_episode_starts": torch.from_numpy(internals.last_episode_starts(m).copy()),
            "action_space_rng": m.action_space.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore after the runner restored the envs: SB3 continues from their observations."""
        m = self.model
        m.policy.load_state_dict(state["policy"])
        saved = state["optimizers"] if "optimizers" in state else {"policy": state["optimizer"]}
        for name, optimizer in self.optimizers().items():
            optimizer.load_state_dict(saved[name])
        m.num_timesteps = int(state["num_timesteps"])
        internals.set_total_timesteps(m, int(state["total_timesteps"]))
        internals.set_n_updates(m, int(state["n_updates"]))
        internals.set_n_calls(m, int(state["n_calls"]))
        internals.set_episode_num(m, int(state["episode_num"]))
        internals.update_progress_remaining(m)
        internals.set_last_obs(m, self.venv.current_observations())
        starts = state["last_episode_starts"].numpy().copy()
        internals.set_last_episode_starts(m, starts | np.array([env.restarted for env in self.venv.envs]))
        m.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self.global_step = m.num_timesteps

    def close(self) -> None:
        self.venv.close()


# ---------------------------------------------------------------------- sb3-dqn


def sb3_train_frequency(train_freq: int, gradient_steps: int, num_envs: int) -> tuple[int, int]:
    """(SB3 train_freq in vector steps, gradient_steps) with the lab's replay ratio.

    The lab counts train_freq in agent steps summed over all envs. SB3 counts vector steps,
    so with N envs it trains every train_freq / N vector steps, or, when N exceeds
    train_freq, every vector step with N / train_freq times the gradient steps.
    """
    if train_freq % num_envs == 0:
        return train_freq // num_envs, gradient_steps
    if num_envs % train_freq == 0:
        return 1, gradient_steps if gradient_steps < 0 else gradient_steps * (num_envs // train_freq)
    raise ValueError(f"--num-envs {num_envs} and --train-freq {train_freq}: one must divide the other "
                     "for SB3 to keep the replay ratio; choose e.g. --num-envs 1, 2, 4 or 8 with --train-freq 4")


@dataclass
class SB3DQNConfig(DQNSettings):
    lab_replay_buffer: bool = option(True, "store transitions in the lab's device replay buffer")

    def __post_init__(self) -> None:
        super().__post_init__()
        sb3_train_frequency(self.train_freq, self.gradient_steps, self.num_envs)


class SB3OffPolicyAgent(SB3Agent):
    """SB3's off-policy loop: `train_freq` vector steps collected, then their gradient steps."""

    default_steps = 1_000_000

    def buffer_estimate(self) -> tuple[str, int, str]:
        """SB3's ReplayBuffer: per transition two observations, an action and three float32
        (reward, done, timeout); the lab's replay (`--lab-replay-buffer`) checks itself."""
        c = self.config
        if getattr(c, "lab_replay_buffer", False):
            return super().buffer_estimate()
        space = self.venv.observation_space
        observation = int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize
        return (f"a replay of {c.buffer_size:,} transitions", c.buffer_size * (observation + self.transition_bytes() + 12),
                "lower --buffer-size (the transitions the replay keeps)")

    @classmethod
    def step_multiple(cls, config: Any) -> int:
        return sb3_train_frequency(config.train_freq, config.gradient_steps, config.num_envs)[0] * config.num_envs

    def common_kwargs(self) -> dict[str, Any]:
        c = self.config
        train_freq, gradient_steps = sb3_train_frequency(c.train_freq, c.gradient_steps, c.num_envs)
        return dict(learning_rate=c.learning_rate, buffer_size=c.buffer_size, learning_starts=c.learning_starts,
                    batch_size=c.batch_size, tau=c.tau, gamma=c.gamma, train_freq=train_freq,
                    gradient_steps=gradient_steps)

    def learn_iteration(self) -> None:
        m: OffPolicyAlgorithm = self.model
        rollout = m.collect_rollouts(m.env, train_freq=m.train_freq, action_noise=m.action_noise,
                                     callback=self.callback, learning_starts=m.learning_starts,
                                     replay_buffer=m.replay_buffer, log_interval=None)
        if m.num_timesteps > m.learning_starts and self._buffer_ready():
            gradient_steps = m.gradient_steps if m.gradient_steps >= 0 else rollout.episode_timesteps
            if gradient_steps > 0:
                m.train(batch_size=m.batch_size, gradient_steps=gradient_steps)

    def _buffer_ready(self) -> bool:
        """min(learning_starts, capacity) transitions stored: a run resumed without its
        replay buffer refills it before training again."""
        m: OffPolicyAlgorithm = self.model
        stored = m.replay_buffer.size() * m.n_envs
        return stored >= min(m.learning_starts, m.replay_buffer.buffer_size * m.n_envs) and stored > 0

    def replay_state(self) -> dict[str, Any] | None:
        """SB3's own replay buffer as tensors (the lab's device buffer saves itself)."""
        buffer = self.model.replay_buffer
        if not self.config.checkpoint_replay_buffer:
            return None
        if hasattr(buffer, "state_dict"):  # the lab's device replay behind SB3's API (sb3-dqn)
            return buffer.state_dict()
        filled = buffer.buffer_size if buffer.full else buffer.pos
        names = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
        return {"pos": int(buffer.pos), "full": bool(buffer.full),
                **{name: torch.from_numpy(getattr(buffer, name)[:filled].copy()) for name in names}}

    def load_replay(self, state: dict[str, Any]) -> None:
        buffer = self.model.replay_buffer
        restarted = any(env.restarted for env in self.venv.envs)
        if hasattr(buffer, "load_state_dict"):
            buffer.load_state_dict(state, end_episodes=restarted)
            return
        for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            values = state[name].numpy()
            getattr(buffer, name)[: len(values)] = values
        buffer.pos, buffer.full = int(state["pos"]), bool(state["full"])
        if restarted:  # the envs start new episodes: the stored ones end where they were cut
            last = (buffer.pos - 1) % buffer.buffer_size
            buffer.timeouts[last] = True
            buffer.dones[last] = True

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        replay = self.replay_state()
        if replay is not None:
            state["buffers"] = replay  # best.pt leaves this out
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "buffers" in state:
            self.load_replay(state["buffers"])


class SB3DQNAgent(SB3OffPolicyAgent):
    """Stable-Baselines3's DQN (same settings and presets as `dqn`)."""

    name = "sb3-dqn"
    Config = SB3DQNConfig
    sb3_class = DQN
    discrete_actions_only = True
    presets = DQN_PRESETS

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        c = self.config
        kwargs: dict[str, Any] = dict(
            self.common_kwargs(), target_update_interval=c.target_update_interval,
            exploration_fraction=c.exploration_fraction, exploration_initial_eps=c.exploration_initial_eps,
            exploration_final_eps=c.exploration_final_eps, max_grad_norm=c.max_grad_norm,
        )
        if not images:
            kwargs["policy_kwargs"] = dict(net_arch=list(c.net_arch))
        if c.lab_replay_buffer:
            from lab.plugins.sb3_agents.replay import SB3ReplayBuffer

            stack = int(self.ctx.env_options.get("frame_stack", 1)) if images else 1
            kwargs["replay_buffer_class"] = SB3ReplayBuffer
            kwargs["replay_buffer_kwargs"] = dict(frame_stack=stack, stack_padding="reset", gamma=c.gamma)
        return kwargs

    def learn_iteration(self) -> None:
        super().learn_iteration()
        self.model.logger.record("train/epsilon", self.model.exploration_rate)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        greedy = super().act(obs, deterministic=True)
        if not deterministic:
            eps, generator = self.model.exploration_rate, self.ctx.generator("actions", greedy.device)
        else:
            eps, generator = self.config.eval_exploration_eps, self.ctx.rng.eval_generator(greedy.device)
        if eps <= 0:
            return greedy
        n = obs.shape[0]
        random = torch.randint(0, int(self.venv.action_space.n), (n,), generator=generator, device=greedy.device)
        explore = torch.rand(n, generator=generator, device=greedy.device) < eps
        return torch.where(explore, random, greedy)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.model.exploration_rate = self.model.exploration_schedule(internals.progress_remaining(self.model))


class SB3ContinuousAgent(SB3OffPolicyAgent):
    """SB3's SAC and TD3 on the same settings as `sac` and `td3`; actions unscaled to the box."""

    def check_box(self) -> None:
        try:
            box_actions(self.venv.action_space, self.name)
        except LabError:
            self.venv.close()
            raise

    def policy_kwargs(self) -> dict[str, Any]:
        return dict(net_arch=list(self.config.net_arch))


@dataclass
class SB3SACConfig(SACConfig):
    """`sac`'s settings, mapped onto SB3's SAC."""

    def __post_init__(self) -> None:
        super().__post_init__()
        sb3_train_frequency(self.train_freq, self.gradient_steps, self.num_envs)


class SB3SACAgent(SB3ContinuousAgent):
    """Stable-Baselines3's SAC with `sac`'s settings and presets."""

    name = "sb3-sac"
    Config = SB3SACConfig
    sb3_class = SB3SAC
    presets = SAC_PRESETS

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        self.check_box()
        c = self.config
        target_entropy: Any = c.target_entropy if c.target_entropy == "auto" else float(c.target_entropy)
        ent_coef: Any = c.ent_coef if c.ent_coef.startswith("auto") else float(c.ent_coef)
        return dict(self.common_kwargs(), ent_coef=ent_coef, target_entropy=target_entropy,
                    target_update_interval=c.target_update_interval, policy_kwargs=self.policy_kwargs())

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if getattr(self.model, "log_ent_coef", None) is not None:
            state["log_ent_coef"] = self.model.log_ent_coef.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "log_ent_coef" in state:
            with torch.no_grad():
                self.model.log_ent_coef.copy_(state["log_ent_coef"])


@dataclass
class SB3TD3Config(TD3Config):
    """`td3`'s settings, mapped onto SB3's TD3."""

    def __post_init__(self) -> None:
        super().__post_init__()
        sb3_train_frequency(self.train_freq, self.gradient_steps, self.num_envs)


class SB3TD3Agent(SB3ContinuousAgent):
    """Stable-Baselines3's TD3 with `td3`'s settings and presets (Gaussian action noise)."""

    name = "sb3-td3"
    Config = SB3TD3Config
    sb3_class = SB3TD3
    presets = TD3_PRESETS

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        self.check_box()
        c = self.config
        dims = int(self.venv.action_space.shape[0])
        noise = NormalActionNoise(np.zeros(dims), c.action_noise * np.ones(dims)) if c.action_noise > 0 else None
        return dict(self.common_kwargs(), policy_delay=c.policy_delay, target_policy_noise=c.target_policy_noise,
                    target_noise_clip=c.target_noise_clip, action_noise=noise, policy_kwargs=self.policy_kwargs())


# ------------------------------------------------------------- sb3-ppo, sb3-a2c


class SB3OnPolicyAgent(SB3Agent):
    """SB3's PPO and A2C with the lab's on-policy settings (`lab.rl.onpolicy.OnPolicyConfig`)."""

    default_steps = 1_000_000

    @classmethod
    def step_multiple(cls, config: OnPolicyConfig) -> int:
        return config.n_steps * config.num_envs  # SB3 updates after whole rollouts

    def buffer_estimate(self) -> tuple[str, int, str]:
        """SB3's RolloutBuffer: per transition an observation, an action and six float32
        (reward, return, episode start, value, log-probability, advantage)."""
        c = self.config
        return (f"a rollout of {c.n_steps:,} steps x {c.num_envs:,} envs", c.n_steps * c.num_envs *
                (self.transition_bytes() + 6 * 4), "lower --n-steps or --num-envs (a rollout holds n_steps x "
                "num_envs transitions)")

    def wrap(self, venv: LabSB3VecEnv) -> Any:
        c = self.config
        if not (c.norm_obs or c.norm_reward):
            return venv
        images = len(venv.observation_space.shape) == 3
        return VecNormalize(venv, norm_obs=c.norm_obs and not images, norm_reward=c.norm_reward, gamma=c.gamma)

    @property
    def normalizer(self) -> VecNormalize | None:
        env = self.model.get_env()
        return env if isinstance(env, VecNormalize) else None

    def observations(self, obs: np.ndarray) -> np.ndarray:
        normalizer = self.normalizer
        if normalizer is None or not normalizer.norm_obs:
            return obs
        return normalizer.normalize_obs(obs)

    def common_kwargs(self, images: bool) -> dict[str, Any]:
        c = self.config
        if c.async_envs:
            raise LabError(f"{self.name} steps its envs through SB3's adapter, one at a time: --async-envs "
                           "applies to the lab's own agents (ppo, a2c, reinforce)")
        policy_kwargs: dict[str, Any] = dict(ortho_init=c.ortho_init, log_std_init=c.log_std_init,
                                             activation_fn=nn.ReLU if c.activation == "relu" else nn.Tanh)
        if not images:
            policy_kwargs["net_arch"] = list(c.net_arch)
        return dict(
            learning_rate=self.schedule(c.learning_rate, c.anneal_lr), n_steps=c.n_steps, gamma=c.gamma,
            gae_lambda=c.gae_lambda, ent_coef=c.ent_coef, vf_coef=c.vf_coef, max_grad_norm=c.max_grad_norm,
            normalize_advantage=c.normalize_advantage, policy_kwargs=policy_kwargs,
        )

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """The evaluation policy samples on Atari unless told otherwise: a greedy one can stall
        after a lost life (RL Zoo's rule); SB3 samples with the torch RNG, which evaluation seeds."""
        sample = self.config.eval_stochastic
        if sample is None:
            sample = len(self.venv.observation_space.shape) == 3
        return super().act(obs, deterministic and not sample)

    def learn_iteration(self) -> None:
        m = self.model
        m.collect_rollouts(m.env, self.callback, m.rollout_buffer, n_rollout_steps=m.n_steps)
        internals.update_progress_remaining(m)
        m.train()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        normalizer = self.normalizer
        if normalizer is not None:
            state["normalizer"] = {
                "obs": [torch.from_numpy(np.asarray(a, dtype=np.float64).copy())
                        for a in (normalizer.obs_rms.mean, normalizer.obs_rms.var)] + [float(normalizer.obs_rms.count)],
                "return": [float(normalizer.ret_rms.mean), float(normalizer.ret_rms.var), float(normalizer.ret_rms.count)],
                "returns": torch.from_numpy(np.asarray(normalizer.returns, dtype=np.float64).copy()),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        normalizer = self.normalizer
        if normalizer is not None and "normalizer" in state:
            saved = state["normalizer"]
            mean, var, count = saved["obs"]
            normalizer.obs_rms.mean, normalizer.obs_rms.var, normalizer.obs_rms.count = mean.numpy(), var.numpy(), count
            normalizer.ret_rms.mean, normalizer.ret_rms.var, normalizer.ret_rms.count = saved["return"]
            normalizer.returns = saved["returns"].numpy().copy()
            restarted = np.array([env.restarted for env in self.venv.envs])
            normalizer.returns[restarted] = 0.0
        super().load_state_dict(state)
        if normalizer is not None:  # SB3 acts on normalised observations
            normalizer.old_obs = internals.last_obs(self.model)
            internals.set_last_obs(self.model, normalizer.normalize_obs(normalizer.old_obs))


@dataclass
class SB3PPOConfig(PPOConfig):
    """`ppo`'s settings, mapped onto SB3's PPO."""

    aliases: ClassVar[dict[str, tuple[str, ...]]] = {"anneal": ("anneal_lr", "anneal_clip_range")}


# RL Zoo's Atari PPO (ppo.yml, `atari`): lr and clip range annealed linearly to 0.
ATARI_PPO: dict[str, Any] = dict(steps=10_000_000, num_envs=8, n_steps=128, n_epochs=4, batch_size=256,
                                 learning_rate=2.5e-4, clip_range=0.1, vf_coef=0.5, ent_coef=0.01, anneal_lr=True,
                                 anneal_clip_range=True)


class SB3PPOAgent(SB3OnPolicyAgent):
    """Stable-Baselines3's PPO with `ppo`'s settings; defaults are SB3's, presets RL Zoo's."""

    name = "sb3-ppo"
    Config = SB3PPOConfig
    sb3_class = PPO
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "CartPole-v1": dict(steps=100_000, num_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                            n_epochs=20, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, anneal_lr=True,
                            anneal_clip_range=True),
        "Acrobot-v1": dict(steps=1_000_000, num_envs=16, n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4,
                           ent_coef=0.0),
        "Pendulum-v1": dict(steps=100_000, num_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10,
                            ent_coef=0.0, learning_rate=1e-3, clip_range=0.2),
        "atari": ATARI_PPO,
    }

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        c = self.config
        return dict(self.common_kwargs(images), batch_size=c.batch_size, n_epochs=c.n_epochs,
                    clip_range=self.schedule(c.clip_range, c.anneal_clip_range), clip_range_vf=c.clip_range_vf,
                    target_kl=c.target_kl)


@dataclass
class SB3A2CConfig(A2CConfig):
    """`a2c`'s settings, mapped onto SB3's A2C."""

    aliases: ClassVar[dict[str, tuple[str, ...]]] = {"anneal": ("anneal_lr",)}


# RL Zoo's Atari A2C (a2c.yml, `atari`), RMSprop as in the TF implementation.
ATARI_A2C: dict[str, Any] = dict(steps=10_000_000, num_envs=16, ent_coef=0.01, vf_coef=0.25)


class SB3A2CAgent(SB3OnPolicyAgent):
    """Stable-Baselines3's A2C with `a2c`'s settings; defaults are SB3's, presets RL Zoo's."""

    name = "sb3-a2c"
    Config = SB3A2CConfig
    sb3_class = A2C
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "CartPole-v1": dict(steps=500_000, num_envs=8, ent_coef=0.0),
        "Acrobot-v1": dict(steps=500_000, num_envs=16, ent_coef=0.0),
        "atari": ATARI_A2C,
    }

    def sb3_kwargs(self, images: bool) -> dict[str, Any]:
        c = self.config
        kwargs = dict(self.common_kwargs(images), use_rms_prop=c.use_rms_prop, rms_prop_eps=c.rms_prop_eps)
        if images and c.use_rms_prop:  # RL Zoo's Atari A2C: RMSprop as in the TF implementation
            from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

            kwargs["policy_kwargs"] = dict(kwargs["policy_kwargs"], optimizer_class=RMSpropTFLike,
                                           optimizer_kwargs=dict(eps=c.rms_prop_eps))
        return kwargs


@hookimpl
def register_algorithms(register: Callable[[type], None]) -> None:
    for agent in (SB3DQNAgent, SB3PPOAgent, SB3A2CAgent, SB3SACAgent, SB3TD3Agent):
        register(agent)
