"""`method: bayes` sweeps, locally: Optuna's TPE on a study kept in a database.

The same W&B-format spec as grid and random search; the trials are asked of an Optuna study
(`TPESampler`, seeded by the sweep's name) stored in a real database: a SQLite file in the
sweep's folder (`RUNS/NAME.sweep/optuna.db`) by default, or any `--storage URL` Optuna takes
(`postgresql://...`, `mysql://...`), so several `lab sweep` processes, on one machine or
several, run trials of one sweep at once: each asks the study for the next trial, names its
run after the trial's number (`NAME-007`), and tells the study the result, so no trial runs
twice and none is lost. `optuna-dashboard sqlite:///runs/NAME.sweep/optuna.db` shows it.

W&B's `early_terminate: {type: hyperband, min_iter, eta[, max_iter]}` becomes Optuna's
HyperbandPruner: each trial reports its metric at every evaluation (`TrialPruner`, an observer of the
trial's own run) and stops cleanly when the pruner says so: a checkpoint, summary status
`pruned`, shown as such in the ranked table and `lab runs`.

Running the command again continues the study: finished and pruned trials stay, trials left
running by a process that died are resumed from their checkpoints, and new ones are asked
until the study holds `--count` trials.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.api import LabError, RunStatus
from lab.api.errors import one_line
from lab.experiments.jobs import Job, run_jobs
from lab.experiments.sweep import Sweep, distribution, train_args, trial_name
from lab.files import make_folder, writing
from lab.run.events import Observer, StopRun
from lab.run.rundir import lock_holder, read_summary

if TYPE_CHECKING:
    import optuna

# The environment a trial's `lab train` process reads to report to its study.
STORAGE_VAR, STUDY_VAR, TRIAL_VAR, METRIC_VAR, PRUNER_VAR = (
    "LAB_OPTUNA_STORAGE", "LAB_OPTUNA_STUDY", "LAB_OPTUNA_TRIAL", "LAB_OPTUNA_METRIC", "LAB_OPTUNA_PRUNER")
SQLITE = "sqlite:///"


def default_storage(sweep: Sweep, runs_dir: Path) -> str:
    """A SQLite file in the sweep's folder."""
    folder = make_folder(runs_dir / f"{sweep.name}.sweep", "create the sweep folder",
                         "choose another --runs-dir (or --storage)")
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


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


@contextlib.contextmanager
def study_lock(storage: str) -> Iterator[None]:
    """Several `lab sweep` processes on one SQLite study take turns to create its tables and to
    ask for a trial, so the schema is made once and the study never holds more than --count
    trials. (A server database serialises this itself.)"""
    if not storage.startswith(SQLITE):
        yield
        return
    path = Path(f"{storage.removeprefix(SQLITE)}.lock")
    with writing(path, "lock the study", "choose another --storage"):
        lock = open(path, "a")  # closed by the `with` below
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def rdb_storage(storage: str) -> optuna.storages.RDBStorage:
    """The study's database; SQLite waits for a writer in another process rather than failing."""
    import optuna

    engine = {"connect_args": {"timeout": 60}} if storage.startswith(SQLITE) else {}
    return optuna.storages.RDBStorage(storage, engine_kwargs=engine)


def open_study(sweep: Sweep, storage: str) -> optuna.Study:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = int.from_bytes(sweep.name.encode()[:8].ljust(8, b"\0"), "little") % 2**32
    try:
        with study_lock(storage):
            return optuna.create_study(study_name=sweep.name, storage=rdb_storage(storage), load_if_exists=True,
                                       direction="maximize" if sweep.goal == "maximize" else "minimize",
                                       sampler=optuna.samplers.TPESampler(seed=seed),
                                       pruner=pruner(sweep.spec.get("early_terminate")))
    except (ValueError, ImportError, SQLAlchemyError, OSError) as exc:
        reason = str(exc).splitlines()[0]
        raise LabError(f"cannot open the sweep's study at {storage} ({reason}); pass a --storage URL Optuna "
                       "takes (sqlite:///FILE, postgresql://..., mysql://...)") from None


def _result(sweep: Sweep, run_dir: Path) -> tuple[RunStatus, float | None]:
    """(how the trial's run ended, its value for the study)."""
    summary = read_summary(run_dir)
    status = RunStatus.read(summary)
    metric = sweep.metric or summary.get("key_metric")
    value = summary.get("best") if metric == summary.get("key_metric") else summary.get(metric)
    return status, float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_bayes(sweep: Sweep, count: int, runs_dir: Path, storage: str, parallel: int, train_extra: list[str],
              resume_extra: list[str], plugins_dir: str | None) -> tuple[dict[str, int], list[Job]]:
    """Ask, run and tell trials until the study holds `count` of them; ({label: exit code}, every trial's job)."""
    from optuna.trial import TrialState

    study = open_study(sweep, storage)
    space = search_space(sweep)
    fixed = {name: param["value"] for name, param in sweep.parameters.items() if "value" in param}
    trial_of: dict[str, optuna.trial.Trial | int] = {}  # a job's trial, or its number when resumed

    def job_for(number: int, params: dict[str, Any], args: list[str], trial_id: int | None = None) -> Job:
        run_dir = runs_dir / trial_name(sweep, number + 1)
        job = Job(args, run_dir, f"trial {number + 1:03d}", {k: params.get(k) for k in sweep.searched})
        if trial_id is not None:  # the trial's process reports its evaluations to the study
            job.env = {STORAGE_VAR: storage, STUDY_VAR: sweep.name, TRIAL_VAR: str(trial_id),
                       METRIC_VAR: sweep.metric or "", PRUNER_VAR: json.dumps(sweep.spec.get("early_terminate"))}
        return job

    def pending() -> Any:
        # trials a dead process left running: continue them from their checkpoints
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = runs_dir / trial_name(sweep, frozen.number + 1)
            if lock_holder(run_dir) or not (run_dir / "checkpoints" / "latest.pt").is_file():
                continue  # a live process has it (or it never started): not ours to resume
            status = read_summary(run_dir).get("status") if (run_dir / "summary.json").is_file() else None
            if status in (RunStatus.INTERRUPTED, None):
                job = job_for(frozen.number, {**fixed, **frozen.params}, ["resume", str(run_dir), *resume_extra],
                              frozen._trial_id)
                trial_of[job.label] = frozen.number
                yield job
        while True:
            with study_lock(storage):
                if len(study.get_trials(deepcopy=False)) >= count:
                    return
                trial = study.ask(space)
            params = {**fixed, **trial.params}
            name = trial_name(sweep, trial.number + 1)
            args = [*train_args(params), "--name", name, "--experiment", sweep.name, *train_extra]
            if plugins_dir:
                args += ["--plugins-dir", plugins_dir]
            job = job_for(trial.number, params, args, trial._trial_id)
            trial_of[job.label] = trial
            yield job

    def ended(job: Job, code: int) -> None:
        status, value = _result(sweep, job.run_dir)
        trial = trial_of.pop(job.label)
        if status == RunStatus.INTERRUPTED:
            return  # stays RUNNING: the next `lab sweep` resumes it
        state = TrialState.COMPLETE if status == RunStatus.FINISHED and value is not None else \
            TrialState.PRUNED if status == RunStatus.PRUNED else TrialState.FAIL
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)

    codes = run_jobs(pending(), parallel, on_end=ended)
    made = [job_for(t.number, {**fixed, **t.params}, []) for t in study.get_trials(deepcopy=False)]
    return codes, made


class TrialPruner(Observer):
    """A trial's own process, watching its run: each evaluation's value goes to the study, and
    when the study's pruner says so the run stops as `pruned` (its checkpoint is saved)."""

    def __init__(self, storage: str, study_name: str, trial_id: int, metric: str | None, early: Any) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.load_study(study_name=study_name, storage=rdb_storage(storage), pruner=pruner(early))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.metric = metric
        self.reports = 0

    @classmethod
    def from_environment(cls) -> TrialPruner | None:
        """The pruner of the trial this process runs, as `run_bayes` named it in the process's
        environment; None outside a bayes trial (or, with a warning, when the study is unreachable)."""
        if not os.environ.get(TRIAL_VAR):
            return None
        try:
            return cls(os.environ[STORAGE_VAR], os.environ[STUDY_VAR], int(os.environ[TRIAL_VAR]),
                       os.environ.get(METRIC_VAR) or None, json.loads(os.environ.get(PRUNER_VAR) or "null"))
        except Exception as exc:  # the trial still trains; it only cannot be pruned
            print("warning: " + one_line(f"cannot report to the sweep's study ({type(exc).__name__}: {exc}); "
                                         "this trial will not be pruned"), file=sys.stderr)
            return None

    def evaluated(self, step: int, metrics: dict[str, Any], key_metric: str) -> None:
        value = metrics.get(self.metric or key_metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        self.reports += 1
        self.trial.report(float(value), self.reports)
        if self.trial.should_prune():
            raise StopRun(RunStatus.PRUNED, f"pruned by the sweep's pruner at step {step:,}\n")
