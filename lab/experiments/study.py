"""A sweep's trials as one Optuna study that any number of `lab sweep` workers share.

Every method keeps its trials in the study (`lab.experiments.storage` says where): a trial
is a number, its run is `NAME-{number+1:03d}`, and its parameters follow from the method:

- grid: point `number` of the grid, in the order of `itertools.product` (last parameter fastest);
- random: draws from a generator seeded by the sweep's name and the trial's number;
- bayes: Optuna's TPE, seeded by the sweep's name and the trial's number, with `constant_liar`
  so trials still running repel new ones.

So a trial's parameters depend on the spec and its number (and, for bayes, on the study's
history), never on which worker drew it: one worker alone is reproducible, and two workers
draw different trials because they claim different numbers. Workers claim under the study's
lock (`claim`): first a trial a dead worker left behind (its run's lock is free: resumed from
its checkpoint, or told its result if it had ended), then a new number, until the grid is
done or the study holds `max_trials` trials. The claim is held until the trial's process
holds its run's lock (`Claim.hold_until_running`), so no other worker ever takes a starting
trial for a dead one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.api import LabError, RunStatus
from lab.experiments.storage import Storage, StudyLock
from lab.experiments.sweep import Sweep, distribution, draw, grid_choices, grid_size, trial_name
from lab.run.rundir import lock_holder, read_summary

if TYPE_CHECKING:
    import optuna

SPEC_ATTR, WORKER_ATTR, HOST_ATTR, PARAMS_ATTR = "lab_spec", "worker", "host", "params"
# How long a claim waits for its trial's process to lock its run (importing torch on a busy node).
START_S = 120.0


def trial_seed(sweep: Sweep, number: int) -> int:
    """The seed of trial `number`'s random draws (random search, TPE): the same on every worker."""
    return int(hashlib.sha256(f"{sweep.name}/{number}".encode()).hexdigest()[:8], 16)


def grid_point(sweep: Sweep, number: int) -> dict[str, Any]:
    """Point `number` of the grid, as `itertools.product` orders them (the last parameter fastest)."""
    point: dict[str, Any] = {}
    for name in reversed(list(sweep.parameters)):
        choices = grid_choices(sweep.parameters[name])
        number, digit = divmod(number, len(choices))
        point[name] = choices[digit]
    return {name: point[name] for name in sweep.parameters}


def random_point(sweep: Sweep, number: int) -> dict[str, Any]:
    rng = random.Random(trial_seed(sweep, number))
    return {name: draw(param, rng) for name, param in sweep.parameters.items()}


def spec_fingerprint(sweep: Sweep) -> str:
    """What makes two specs the same sweep: method, metric, goal and parameters (not the budget flags)."""
    text = json.dumps({"method": sweep.method, "metric": sweep.metric, "goal": sweep.goal,
                       "parameters": sweep.parameters}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def worker_name() -> str:
    """This worker as `lab sweep --status` shows it: its Slurm array task, else its process id."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if all(job):
        return f"slurm {job[0]}_{job[1]}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm {os.environ['SLURM_JOB_ID']}"
    return f"pid {os.getpid()}"


@dataclass
class Claim:
    """A trial this worker runs: a new one, or one a dead worker left (`resume`)."""

    number: int
    trial_id: int
    params: dict[str, Any]
    resume: bool
    lock: StudyLock

    def hold_until_running(self, run_dir: Path, proc: subprocess.Popen[Any] | None) -> None:
        """Keep the study locked until `proc` holds its run's lock (or has ended), then release it."""
        hold_until_running(self.lock, [run_dir], proc)


def hold_until_running(lock: StudyLock, run_dirs: list[Path], proc: subprocess.Popen[Any] | None) -> None:
    """Keep the study locked until `proc` holds the lock of every run in `run_dirs` (or has
    ended), then release it: no worker takes a starting trial for one a dead worker left."""
    try:
        deadline = time.monotonic() + START_S
        for run_dir in run_dirs:
            while proc is not None and proc.poll() is None and time.monotonic() < deadline:
                holder = lock_holder(run_dir)
                if holder and holder.startswith(f"pid {proc.pid} "):
                    break
                time.sleep(0.05)
    finally:
        lock.release()


class SweepStudy:
    """The study of one sweep in one storage; `claim` and `tell` are the workers' two verbs."""

    def __init__(self, sweep: Sweep, storage: Storage, runs_dir: Path) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sweep, self.storage, self.runs_dir = sweep, storage, runs_dir
        self.fixed = {name: p["value"] for name, p in sweep.parameters.items() if "value" in p}
        self.space = search_space(sweep) if sweep.method == "bayes" else {}
        direction = "maximize" if sweep.goal == "maximize" else "minimize"
        with storage.lock():  # one worker creates a fresh database's tables and the study
            backend = storage.open()
            try:
                self.study = optuna.create_study(study_name=sweep.name, storage=backend, load_if_exists=True,
                                                 direction=direction, pruner=pruner(sweep.spec.get("early_terminate")))
                recorded = self.study.user_attrs.get(SPEC_ATTR)
                if recorded is None:
                    self.study.set_user_attr(SPEC_ATTR, spec_fingerprint(sweep))
            except LabError:
                raise
            except Exception as exc:
                raise storage.unreachable(exc) from None
        if recorded is not None and recorded != spec_fingerprint(sweep):
            raise LabError(f"the study '{sweep.name}' at {storage.shown} was made by another spec (its method, metric "
                           "or parameters differ); give the changed sweep another `name:`")
        if self.study.direction.name.lower() != direction:
            raise LabError(f"the study '{sweep.name}' at {storage.shown} {self.study.direction.name.lower()}s its "
                           f"metric, but the spec says {direction}; give the changed sweep another `name:`")

    def run_dir(self, number: int) -> Path:
        return self.runs_dir / trial_name(self.sweep, number + 1)

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def params_of(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """Every parameter of a trial (the fixed ones too), as its run was given them."""
        if PARAMS_ATTR in trial.user_attrs:
            return dict(trial.user_attrs[PARAMS_ATTR])
        return {**self.fixed, **trial.params}

    # ------------------------------------------------------------------ claiming

    def claim(self, max_trials: int | None) -> Claim | None:
        """The next trial for this worker, or None when the sweep has no more (the grid is
        done, or the study holds `max_trials`). The study stays locked until the caller's
        `Claim.hold_until_running` (or its own release when there is nothing to claim)."""
        lock = self.storage.lock()
        lock.acquire()
        try:
            claim = self._left_behind(lock) or self._new(lock, max_trials)
        except BaseException:
            lock.release()
            raise
        if claim is None:
            lock.release()
        elif claim.resume:  # the trial's worker and host are now this one's
            self._attrs(claim.trial_id, {WORKER_ATTR: worker_name(), HOST_ATTR: socket.gethostname()})
        return claim

    def claim_more(self, first: Claim, more: int, max_trials: int | None) -> list[Claim]:
        """Up to `more` new trials besides `first` (a new trial whose claim holds the study
        locked), for one population: they share its lock and its `hold_until_running`."""
        claims: list[Claim] = []
        try:
            while len(claims) < more:
                claim = self._new(first.lock, max_trials)
                if claim is None:
                    break
                claims.append(claim)
        except BaseException:
            first.lock.release()
            raise
        return claims

    def _attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        import optuna

        trial = optuna.trial.Trial(self.study, trial_id)
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # its own worker told its end meanwhile: the note is moot

    def _left_behind(self, lock: StudyLock) -> Claim | None:
        """A RUNNING trial whose run nobody holds: its worker died. A run that ended is told
        its result; an interrupted one with a checkpoint is resumed; one that never reached
        its first checkpoint is failed (there is nothing to resume)."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = self.run_dir(trial.number)
            if lock_holder(run_dir):
                continue  # a live process trains it
            status = RunStatus.read(read_summary(run_dir)) if (run_dir / "summary.json").is_file() else None
            if status in (RunStatus.INTERRUPTED, None) and \
                    (run_dir / "checkpoints" / "latest.pt").is_file():
                return Claim(trial.number, trial._trial_id, self.params_of(trial), True, lock)
            if status in (RunStatus.INTERRUPTED, None):
                self._attrs(trial._trial_id, {"lost": "its worker died before the run's first checkpoint"})
                self._finish(trial.number, TrialState.FAIL, None)
            else:
                self.tell(trial.number)
        return None

    def _new(self, lock: StudyLock, max_trials: int | None) -> Claim | None:
        import optuna
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        number = len(trials)
        if self.sweep.method == "grid" and number >= grid_size(self.sweep):
            return None
        held = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)
        if max_trials is not None and sum(t.state in held for t in trials) >= max_trials:
            return None
        if self.sweep.method == "bayes":
            self.study.sampler = optuna.samplers.TPESampler(seed=trial_seed(self.sweep, number), constant_liar=True)
            trial = self.study.ask(self.space)
            params = {**self.fixed, **trial.params}
        else:
            trial = self.study.ask()
            params = grid_point(self.sweep, trial.number) if self.sweep.method == "grid" else \
                random_point(self.sweep, trial.number)
            trial.set_user_attr(PARAMS_ATTR, params)
        self._attrs(trial._trial_id, {WORKER_ATTR: worker_name(), HOST_ATTR: socket.gethostname()})
        return Claim(trial.number, trial._trial_id, params, False, lock)

    # ------------------------------------------------------------------ results

    def tell(self, number: int) -> RunStatus | None:
        """Tell the study how trial `number`'s run ended (its summary); an interrupted run stays
        RUNNING for a worker to resume. A finished run without the sweep's metric is a LabError:
        the optimiser (and the ranking) would be fed nothing."""
        from optuna.trial import TrialState

        run_dir = self.run_dir(number)
        summary = read_summary(run_dir) if (run_dir / "summary.json").is_file() else {}
        status = RunStatus.read(summary) if summary else None
        if status == RunStatus.INTERRUPTED:
            return status
        value = metric_value(self.sweep, summary)
        if status == RunStatus.FINISHED and value is None:
            self._finish(number, TrialState.FAIL, None)
            logged = ", ".join(sorted(k for k in summary if "/" in k)[:12]) or "nothing"
            raise LabError(f"trial {number + 1:03d} ({run_dir}) logged no '{self.sweep.metric}' (it logged: {logged}); "
                           "fix the spec's `metric: {name: ...}` and give it another `name:`")
        state = TrialState.COMPLETE if status == RunStatus.FINISHED else \
            TrialState.PRUNED if status == RunStatus.PRUNED else TrialState.FAIL
        self._finish(number, state, value if state == TrialState.COMPLETE else None)
        return status

    def _finish(self, number: int, state: Any, value: float | None) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        trial = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
        if trial.state != TrialState.RUNNING:
            return  # another worker told it first
        try:
            self.study.tell(number, value, state=state, skip_if_finished=True)
        except UpdateFinishedTrialError:
            # told meanwhile by another worker, which saw the run's lock free between this
            # trial's process ending and this worker telling: the same result, recorded once
            pass


def metric_value(sweep: Sweep, summary: dict[str, Any]) -> float | None:
    """The trial's value for the study: the run's best key metric, or the last value of another."""
    metric = sweep.metric or summary.get("key_metric")
    value = summary.get("best") if metric == summary.get("key_metric") else summary.get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def search_space(sweep: Sweep) -> dict[str, optuna.distributions.BaseDistribution]:
    """W&B's parameter distributions as Optuna's (fixed values are not searched)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    for name, param in sweep.parameters.items():
        kind, low, high = distribution(param), param.get("min"), param.get("max")
        if kind == "constant":
            continue
        if kind == "categorical":
            space[name] = CategoricalDistribution(param["values"])
        elif kind == "int_uniform":
            space[name] = IntDistribution(int(low), int(high))
        elif kind == "uniform":
            space[name] = FloatDistribution(float(low), float(high))
        elif kind == "q_uniform":
            space[name] = FloatDistribution(float(low), float(high), step=float(param.get("q", 1)))
        elif kind == "log_uniform_values":
            space[name] = FloatDistribution(float(low), float(high), log=True)
        elif kind == "log_uniform":  # W&B: min and max are natural-log exponents
            space[name] = FloatDistribution(math.exp(low), math.exp(high), log=True)
        else:
            raise LabError(f"parameter '{name}': bayes search does not take {kind} distributions")
    if not space:
        raise LabError("a bayes sweep needs at least one searched parameter (values or a min/max range)")
    return space


def pruner(early: Any) -> optuna.pruners.BasePruner:
    """W&B's `early_terminate` hyperband as Optuna's HyperbandPruner (none: never prune)."""
    import optuna

    if not early:
        return optuna.pruners.NopPruner()
    if not isinstance(early, dict) or early.get("type") != "hyperband":
        raise LabError("early_terminate takes {type: hyperband, min_iter: N, eta: E} (W&B's format)")
    return optuna.pruners.HyperbandPruner(min_resource=int(early.get("min_iter", 1)),
                                          max_resource=early.get("max_iter", "auto"),
                                          reduction_factor=int(early.get("eta", 3)))
