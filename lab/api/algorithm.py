"""The contract between the runner and an algorithm plugin.

An algorithm is a config dataclass plus a subclass of `Algorithm`. The runner owns the
loop (progress, logging, evaluation, checkpoints, signals, resume); the algorithm owns
the learning code. `train_step` does a small unit of work (one vector-env step and its
updates, one minibatch, ...) and advances `global_step`; the runner calls it until the
step budget is spent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from lab.api.context import Context
from lab.api.errors import LabError


class Kind(str, Enum):
    """What an algorithm learns from: agents act in `--env`; the others learn from `--data`."""

    AGENT = "agent"
    GENERATOR = "generator"
    SUPERVISED = "supervised"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Target:
    """What a run names to learn from, as `check_target` sees it (the runner then checks that
    a registered factory makes the env or dataset)."""

    env: str | None
    data: str | None
    epochs: int | None


class Pace(NamedTuple):
    """The steps from `starts` on will each take `extra_s` seconds more than the steps now
    (an off-policy agent's random warm-up collects many times faster than it learns)."""

    starts: int
    extra_s: float


class Algorithm(ABC):
    """Base class for every registered algorithm.

    Class attributes a plugin sets:
      name:     the CLI name (`lab train NAME`).
      kind:     Kind.AGENT (needs --env), Kind.GENERATOR or Kind.SUPERVISED (need --data);
                the words "agent", "generator", "supervised" are taken too.
      Config:   a dataclass; every field becomes a `--field-name` flag.
      presets:  {env_id_or_glob_or_dataset: {field: value}} tuned defaults (RL-Zoo style);
                the key "steps" is that preset's default budget. Exact ids win over globs
                (`ALE/*`), globs apply in the order listed.
      key_metric / key_metric_mode: what `best.pt` and `lab runs` rank by.
      media_each_evaluation: also write media after every evaluation (generators' sample
                grids), not only at the end of the run.
      data_parallel: trains under torchrun: takes its share of the data or envs and
                averages its gradients across processes (`lab.distributed`).
      supports_bf16: runs its network passes under `ctx.autocast()`, so `--precision bf16`
                applies (others refuse it rather than ignore it).
      evaluates_on_every_rank: under torchrun every process evaluates its share (datasets,
                summed by the algorithm); False: rank 0 alone evaluates (agents).
      default_steps / default_epochs: the budget when neither --steps nor --epochs is given
                (nor a preset's `steps`); the one that is not None applies.
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    Config: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    key_metric: ClassVar[str] = "eval/return_mean"
    key_metric_mode: ClassVar[Literal["max", "min"]] = "max"
    media_each_evaluation: ClassVar[bool] = False
    version: ClassVar[str | None] = None
    data_parallel: ClassVar[bool] = False
    supports_bf16: ClassVar[bool] = False
    evaluates_on_every_rank: ClassVar[bool] = True
    default_steps: ClassVar[int | None] = None
    default_epochs: ClassVar[int | None] = 10

    def __init__(self, config: Any, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.global_step = 0

    @classmethod
    def check_target(cls, target: Target) -> None:
        """Refuse, as one LabError, a run that names nothing to learn from: dataset
        algorithms need `--data NAME` (agents, `lab.api.Agent`, need `--env`)."""
        if target.data is None:
            raise LabError(f"{cls.name} trains on a dataset: pass --data NAME (e.g. mnist; `lab plugins` lists datasets)")
        if target.env is not None:
            raise LabError(f"{cls.name} learns from --data {target.data}; --env is for agents: leave it out")

    @classmethod
    def next_command(cls, run_dir: Path) -> str:
        """What the end-of-run report suggests once a run has finished."""
        return f"lab compare {run_dir}"

    @classmethod
    def step_multiple(cls, config: Any) -> int:
        """How many steps one `train_step` advances (num_envs, a whole rollout): the runner
        rounds a --steps budget up to a multiple, so a run ends where it says it will."""
        return 1

    @property
    def cpu_threads(self) -> int | None:
        """Torch CPU threads this algorithm runs best with (None: torch's default, all cores).

        Small networks want 1: their ops are too small to split, and waking a second thread
        for each costs more than the op (measured: PPO on HalfCheetah 2x slower on 2 threads
        with OpenMP's passive waiting, which the Atari envs need). `--threads` overrides it.
        """
        return None

    def pace(self) -> Pace | None:
        """How much slower the steps still to come will be than the recent ones, for an ETA
        that is right from the start (None: the recent rate is the pace)."""
        return None

    @property
    def steps_per_epoch(self) -> int | None:
        """Global steps in one pass over the data, so the runner can turn --epochs into steps
        (known once `__init__` has loaded the data; without it a run counts --steps only)."""
        return None

    @abstractmethod
    def train_step(self) -> dict[str, float]:
        """Do one unit of training, advance `self.global_step`, return scalar metrics."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Evaluate the current model; keys like `eval/return_mean` or `eval/accuracy`."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training (models, optimizers, buffers, schedules).

        Values must load under `torch.load(weights_only=True)`: tensors, numbers, strings,
        lists, tuples and dicts of them. Put replay/rollout contents under the top-level
        key "buffers": `latest.pt` keeps them, `best.pt` (for evaluation) leaves them out,
        so `load_state_dict` must accept a state without "buffers".
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (by default nothing: the default `state_dict` saves nothing)."""
        return None

    def write_media(self, media_dir: Path) -> dict[str, Path]:
        """Write media for the end of training or `lab eval --video` (sample grids as PNG,
        episode videos as MP4) and return {key: path}; the runner logs them to the trackers."""
        return {}

    def close(self) -> None:
        """Release envs, threads, files (by default nothing: an algorithm holding none need not override it)."""
        return None
