"""The services a plugin's algorithm receives as `ctx`, described as a Protocol.

The runner builds the object (`lab.run.context.RunContext`); a plugin only uses what is
named here, so the runner's own bookkeeping (checkpointed env states, compile timings,
the registry) stays out of a plugin's reach and its type.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, overload

import gymnasium as gym
import torch

from lab.api.datasets import ImageDataset, UnpairedImageDataset
from lab.api.envs import TrainingEnv, VecEnv

Precision = Literal["fp32", "bf16"]
# What evaluation and videos act with: a batch of observations on the run's device -> actions.
Policy = Callable[[torch.Tensor], torch.Tensor]


class StopRequested(BaseException):
    """Raised by `ctx.check_stop()`: a stop signal (Ctrl-C, SIGTERM, SIGHUP, SIGUSR2) came and the work
    in progress did not end within the runner's grace, so the run stops here.

    Let it propagate: the runner ends the run `interrupted` at its last consistent state (the
    last checkpoint, or this step when only an evaluation or media was cut short). It derives
    from BaseException, as KeyboardInterrupt does, so an `except Exception` does not swallow it.
    """


class RandomStreams(Protocol):
    """The run's named random streams: seeded from (run seed, name, rank), saved with every
    checkpoint and restored on resume, so adding a stream never shifts another."""

    def generator(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """The stream `name` on `device` (default: the run's): the same object on every call."""
        ...

    def eval_generator(self, device: torch.device | str | None = None) -> torch.Generator:
        """Randomness for acting in evaluation (an evaluation epsilon): fresh for each
        evaluation, a function of (run seed, global_step), never a training stream."""
        ...

    def seed_for(self, name: str, step: int = 0) -> int:
        """A seed for something that takes integers (an env reset), from (run seed, name, step)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Every stream's state (an algorithm that replays draws saves and restores them)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what `state_dict` returned."""
        ...


class Context(Protocol):
    """What an algorithm may use. Built by the runner; plugins never construct it."""

    @property
    def device(self) -> torch.device:
        """The run's device: every tensor an algorithm makes belongs there."""
        ...

    @property
    def seed(self) -> int:
        """The run seed (`--seed`); named streams derive from it (`generator`, `rng`)."""
        ...

    @property
    def total_steps(self) -> int:
        """The schedule horizon: the step budget the run was created with (or `--horizon`).
        Schedules (exploration, learning-rate decay) read it whenever they need it; a resumed
        or extended run keeps it, so no schedule restarts. Known before the algorithm is
        built, except for an `--epochs` budget: known once `__init__` has loaded the data
        (`steps_per_epoch`), before the first `train_step`."""
        ...

    @property
    def env_id(self) -> str | None:
        """`--env` (agents), else None."""
        ...

    @property
    def data(self) -> str | None:
        """`--data NAME[:ARG]` (dataset algorithms), else None."""
        ...

    @property
    def eval_episodes(self) -> int:
        """Episodes per evaluation (`--eval-episodes`, `lab eval --episodes N`)."""
        ...

    @property
    def training(self) -> bool:
        """False under `lab eval` and `lab.load`, so an algorithm can skip what only training
        needs (a large replay buffer, training envs)."""
        ...

    @property
    def rank(self) -> int:
        """This process among those training together under torchrun (0 otherwise)."""
        ...

    @property
    def world_size(self) -> int:
        """How many processes train together under torchrun (1 otherwise). An algorithm that
        supports it (`data_parallel = True`) takes its share of the data or envs and averages
        its gradients across them (`lab.distributed`)."""
        ...

    @property
    def precision(self) -> Precision:
        """"bf16" where the run autocasts its network passes (see `autocast`), else "fp32"."""
        ...

    @property
    def env_options(self) -> dict[str, Any]:
        """The settings of the env's family (`EnvFamily.options`, e.g. Atari's `frame_stack`),
        passed to every `make_env` call."""
        ...

    @property
    def rng(self) -> RandomStreams:
        """The run's named random streams, saved with every checkpoint."""
        ...

    @property
    def is_main_process(self) -> bool:
        """Rank 0: the process that writes the run folder and prints (always, without torchrun)."""
        ...

    @property
    def media_dir(self) -> Path:
        """The run's media/ folder (made on first use); name new files with `media_path`."""
        ...

    def media_path(self, stem: str, suffix: str) -> Path:
        """A new file in media/ named after `stem`: media is never overwritten."""
        ...

    @overload
    def make_env(self, num_envs: int = 1, *, evaluation: Literal[False] = False, render: bool = False,
                 seed: int | None = None, **options: Any) -> TrainingEnv: ...
    @overload
    def make_env(self, num_envs: int = 1, *, evaluation: Literal[True], render: bool = False,
                 seed: int | None = None, **options: Any) -> VecEnv: ...
    def make_env(self, num_envs: int = 1, *, evaluation: bool = False, render: bool = False,
                 seed: int | None = None, **options: Any) -> VecEnv | TrainingEnv:
        """`--env` as a vector env on this run's device.

        Training envs (evaluation=False) come wrapped as a `TrainingEnv`: they report
        finished episodes to the runner, which logs `train/episode_return` and
        `train/episode_length`, and the runner checkpoints them. Evaluation envs follow the
        evaluation protocol (full games, no reward clipping, sticky actions).
        """
        ...

    def observation_space(self) -> gym.Space[Any]:
        """The env's single observation space."""
        ...

    def load_dataset(self, **options: Any) -> ImageDataset | UnpairedImageDataset:
        """`--data NAME[:ARG]` as CPU uint8 tensors."""
        ...

    def generator(self, name: str = "default", device: torch.device | str | None = None) -> torch.Generator:
        """The run's random stream `name` on `device` (`rng.generator`); use one name per
        purpose ("actions", "replay", ...)."""
        ...

    def compile(self, fn: Callable[..., Any], *, name: str, calls: Callable[[], int],
                pays_on_cpu: bool = False) -> Callable[..., Any]:
        """`fn` compiled with torch.compile or left eager, as `--compile` says.

        name: how notes call it ("dqn update"); calls: how many times this run will call it
        (asked at the first call, when the budget is known); pays_on_cpu: compiling it was
        measured to pay on a CPU (`auto` compiles on CUDA regardless).
        """
        ...

    def autocast(self) -> torch.autocast:
        """Where a plugin runs its network passes under `--precision`: `with ctx.autocast():`.
        bf16 autocasts matrix products and convolutions while weights, optimizer state and
        reductions stay fp32; fp32 changes nothing. Only an algorithm that declares
        `supports_bf16` is given bf16."""
        ...

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalars now (the runner also logs what `train_step` returns)."""
        ...

    def load_run(self, run_dir: str | Path, checkpoint: str = "best") -> Any:
        """Another run's trained algorithm on this run's device, as `lab.load` gives it (a
        classifier run a generator measures its samples in)."""
        ...

    def evaluate_policy(self, policy: Policy, step: int) -> dict[str, float]:
        """The evaluation protocol: `eval_episodes` whole episodes on evaluation envs seeded
        from (run seed, `step`), acting with `policy`; returns `eval/return_mean`,
        `eval/return_std`, `eval/length_mean` (and `eval/normalized_score` where the env's
        family publishes reference scores)."""
        ...

    def record_video(self, policy: Policy, path: Path, step: int, max_steps: int) -> Path:
        """One evaluation episode from the evaluation seed of `step`, at most `max_steps`
        agent steps, written to `path` as MP4."""
        ...

    def check_stop(self) -> None:
        """Call it in every loop that can run long (a rollout's env steps, evaluation episodes,
        sampling in chunks, a solver's steps): once a stop signal has waited a few seconds
        (`lab.signals.GRACE_S`) for the work in progress to end, it raises `StopRequested`, so
        a run stops within seconds wherever it is. A check is an attribute read; it does
        nothing outside a training run (`lab eval`, `lab.load`). Under torchrun only the checks
        inside `train_step` act, where every process makes the same calls: the processes agree
        there (every few calls) and stop together; evaluations and media on rank 0 alone end
        first."""
        ...
