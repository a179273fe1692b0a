"""The services the runner hands an algorithm (`lab.api.Context`): device, seeds, tracking,
envs, datasets, evaluation; and the runner's side of them (env states, compile timings)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import gymnasium as gym
import torch

from lab import distributed
from lab.api import (
    ImageDataset,
    LabError,
    Policy,
    Precision,
    StopRequested,
    Tracker,
    TrainingEnv,
    UnpairedImageDataset,
    VecEnv,
)
from lab.api.envs import Episode
from lab.files import make_folder
from lab.rl.evaluation import evaluate_policy, evaluation_seed, record_video
from lab.run.compile import CompileSetting, HotFunction
from lab.run.registry import Registry
from lab.seeding import RNGStreams
from lab.signals import STOP

# Under torchrun, every how many checks inside `train_step` the processes agree on stopping
# (an all-reduce: tens of microseconds on gloo; a CartPole vector step costs about as much).
STOP_CHECK_EVERY = 16


@dataclass
class RunContext:
    """`lab.api.Context` as the runner builds it, plus what only the runner uses: the
    registry, the training envs it checkpoints, the seconds spent compiling.

    The fields a plugin reads are documented on `lab.api.Context`; `total_steps` is also
    saved with checkpoints and restored by the runner, and `lab resume --steps N` leaves it
    as it was, so a resumed or extended run never restarts a schedule.
    """

    device: torch.device
    seed: int
    total_steps: int
    run_dir: Path
    registry: Registry
    tracker: Tracker
    env_id: str | None = None
    data: str | None = None
    data_dir: Path | None = None
    eval_episodes: int = 10
    training: bool = True
    rank: int = 0
    world_size: int = 1
    compile_setting: CompileSetting = "auto"
    precision: Precision = "fp32"
    env_options: dict[str, Any] = field(default_factory=dict)
    run_loader: Callable[[Path, str, torch.device], Any] | None = None  # `lab.load`, from the entry points
    rng: RNGStreams = field(init=False)
    _compile_seconds: float = field(default=0.0, repr=False)
    _train_envs: list[TrainingEnv] = field(default_factory=list, repr=False)
    _observation_space: gym.Space[Any] | None = field(default=None, repr=False)
    # The runner sets it around `train_step`: under torchrun, the checks made there are the
    # ones every process makes alike, so they can agree on stopping (see `check_stop`).
    in_step: bool = field(default=False, repr=False)
    _stop_checks: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.rng = RNGStreams(self.seed, self.device, self.rank)

    @property
    def media_dir(self) -> Path:
        """The run's media/ folder (made on first use); name new files with `media_path`."""
        return make_folder(self.run_dir / "media", "create the media folder", "move the run folder where there is room")

    def media_path(self, stem: str, suffix: str) -> Path:
        """A new file in media/ named after `stem`: media is never overwritten (a `lab eval
        --video` at the step of the training video gets `stem-2.mp4`)."""
        path = self.media_dir / f"{stem}{suffix}"
        copy = 2
        while path.exists():
            path = self.media_dir / f"{stem}-{copy}{suffix}"
            copy += 1
        return path

    @property
    def is_main_process(self) -> bool:
        """Rank 0: the process that writes the run folder and prints (always, without torchrun)."""
        return self.rank == 0

    @overload
    def make_env(self, num_envs: int = 1, *, evaluation: Literal[False] = False, render: bool = False,
                 seed: int | None = None, **options: Any) -> TrainingEnv: ...
    @overload
    def make_env(self, num_envs: int = 1, *, evaluation: Literal[True], render: bool = False,
                 seed: int | None = None, **options: Any) -> VecEnv: ...
    def make_env(self, num_envs: int = 1, *, evaluation: bool = False, render: bool = False,
                 seed: int | None = None, **options: Any) -> VecEnv | TrainingEnv:
        """`--env` as a vector env on this run's device (`lab.api.Context.make_env`); the
        training envs are kept, so the runner checkpoints them and logs their episodes."""
        if self.env_id is None:
            raise LabError("this algorithm needs an environment; pass --env ID (see `lab plugins`)")
        factory = self.registry.env_factory(self.env_id)
        if seed is None:  # rank r's training envs are envs r*num_envs... of the whole run: one
            # process with all of them starts the same games (gymnasium seeds env i with seed + i)
            seed = self.seed if evaluation else self.seed + self.rank * num_envs
        env: VecEnv = factory(
            self.env_id,
            num_envs=num_envs,
            seed=seed,
            device=self.device,
            evaluation=evaluation,
            render=render,
            **{**self.env_options, **options},
        )
        if evaluation:
            return env
        index = len(self._train_envs)
        training = TrainingEnv(env, lambda step: self.rng.seed_for(f"env{index}-restart", step))
        self._train_envs.append(training)
        return training

    def observation_space(self) -> gym.Space[Any]:
        """The env's single observation space (of the first training env, else asked of an
        evaluation env once)."""
        if self._train_envs:
            return self._train_envs[0].env.single_observation_space
        if self._observation_space is None:
            env = self.make_env(num_envs=1, evaluation=True)
            try:
                self._observation_space = env.single_observation_space
            finally:
                env.close()
        return self._observation_space

    def load_dataset(self, **options: Any) -> ImageDataset | UnpairedImageDataset:
        """Load `--data NAME[:ARG]` from `data_dir` (CPU uint8 tensors)."""
        if self.data is None:
            raise LabError("this algorithm needs a dataset; pass --data NAME (see `lab plugins`)")
        name, _, arg = self.data.partition(":")
        factory = self.registry.dataset_factory(name)
        data_dir = self.data_dir if self.data_dir is not None else Path("data")
        dataset = factory(data_dir, arg or None, **options)
        if not isinstance(dataset, (ImageDataset, UnpairedImageDataset)):  # a plugin's factory: check what it gave
            raise LabError(f"the factory of dataset '{name}' returned a {type(dataset).__name__}, not a "
                           "lab.api.ImageDataset or UnpairedImageDataset")
        return dataset

    def generator(self, name: str = "default", device: torch.device | str | None = None) -> torch.Generator:
        """The run's random stream `name` on `device` (default: the run's device).

        Seeded from (run seed, name, rank), saved with every checkpoint and restored on
        resume; evaluation never advances it. Use one name per purpose ("actions",
        "replay", ...) so adding a stream never shifts another.
        """
        return self.rng.generator(name, device)

    def compile(self, fn: Callable[..., Any], *, name: str, calls: Callable[[], int],
                pays_on_cpu: bool = False) -> HotFunction:
        """`fn` compiled with torch.compile or left eager, as `--compile` says (`lab.run.compile`).

        name: how notes call it ("dqn update"); calls: how many times this run will call it
        (asked at the first call, when the budget is known); pays_on_cpu: compiling it was
        measured to pay on a CPU (`auto` compiles on CUDA regardless).
        """
        return HotFunction(fn, name=name, setting=self.compile_setting, device=self.device, calls=calls,
                           pays_on_cpu=pays_on_cpu, report=self._compiled)

    def autocast(self) -> torch.autocast:
        """Where a plugin runs its network passes under `--precision`: `with ctx.autocast():`.

        bf16 autocasts matrix products and convolutions to bfloat16 (AMX tiles on recent
        Xeons, tensor cores on GPUs) while weights, optimizer state and reductions stay fp32;
        fp32 changes nothing. Only an algorithm that declares `supports_bf16` is given bf16.
        """
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def load_run(self, run_dir: str | Path, checkpoint: str = "best") -> Any:
        """Another run's trained algorithm on this run's device (`lab.load`)."""
        if self.run_loader is None:
            raise LabError(f"this run cannot load other runs ({run_dir}): it was built without the lab's entry points")
        return self.run_loader(Path(run_dir), checkpoint, self.device)

    def evaluate_policy(self, policy: Policy, step: int) -> dict[str, float]:
        """The evaluation protocol (`lab.rl.evaluation`) on `--env`, from the seed of `step`."""
        return evaluate_policy(self, policy, self.eval_episodes, evaluation_seed(self, step),
                               normalized=lambda score: self.registry.normalized_score(self.env_id, score))

    def record_video(self, policy: Policy, path: Path, step: int, max_steps: int) -> Path:
        """One evaluation episode from the seed of `step`, as MP4 (`lab.rl.evaluation`)."""
        return record_video(self, policy, path, evaluation_seed(self, step), max_steps=max_steps)

    def check_stop(self) -> None:
        """Raise `StopRequested` once a stop signal has waited `GRACE_S` for the work in progress
        (`lab.api.Context.check_stop`); during set-up, stop the set-up (`SetupInterrupted`).

        Several processes: a process that left a rollout alone would leave the others waiting
        in their next collective, so the processes decide together. Inside `train_step` every
        process makes the same checks in the same order (the same rollout length, the same
        minibatches), and every STOP_CHECK_EVERY-th one is an all-reduce of "overdue on any
        process?": all of them raise at the same check. Elsewhere (an evaluation on rank 0
        alone) a check does nothing, and the ranks stop together at the step's end as before.
        """
        if not self.training or STOP.signum is None or STOP.done:
            return
        if not STOP.training:
            STOP.raise_if_requested()  # set-up: nothing trained yet, nothing to save
            return
        if self.world_size > 1:
            if not self.in_step:
                return
            self._stop_checks += 1
            if self._stop_checks % STOP_CHECK_EVERY == 0 and distributed.any_flag(STOP.overdue):
                raise StopRequested(signal.Signals(STOP.signum).name)
            return
        if STOP.overdue:
            raise StopRequested(signal.Signals(STOP.signum).name)

    def _compiled(self, name: str, seconds: float) -> None:
        if self.is_main_process:
            print(f"note: compiled the {name} in {seconds:.1f} s (--compile {self.compile_setting})",
                  file=sys.stderr, flush=True)
        self._compile_seconds += seconds

    def pop_compile_seconds(self) -> float:
        """Seconds spent compiling since the last call (used by the runner)."""
        seconds, self._compile_seconds = self._compile_seconds, 0.0
        return seconds

    def env_states(self) -> list[dict[str, Any]]:
        """Checkpoint state of every training env (used by the runner)."""
        return [env.state_dict() for env in self._train_envs]

    def load_env_states(self, states: list[dict[str, Any]] | None, step: int) -> list[TrainingEnv]:
        """Continue each training env from `states`; returns the envs that had to restart."""
        states = states or []
        for i, env in enumerate(self._train_envs):
            env.load_state_dict(states[i] if i < len(states) else None, step)
        return [env for env in self._train_envs if env.restarted]

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalars now (the runner also logs what `train_step` returns)."""
        self.tracker.log(metrics, step)

    def pop_episodes(self) -> list[Episode]:
        """Finished training episodes from every training env (used by the runner)."""
        episodes: list[Episode] = []
        for env in self._train_envs:
            episodes.extend(env.pop_episodes())
        return episodes

    def close_envs(self) -> None:
        """Close every training env `make_env` handed out (used by the runner)."""
        for env in self._train_envs:
            env.close()
        self._train_envs.clear()
