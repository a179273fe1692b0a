"""One `lab sweep` worker: claim a trial of the shared study, run it, tell the study, again.

Any number of workers run one sweep together (on one machine with `--parallel`, as several
commands, or as the tasks of a Slurm array: `lab.experiments.launch`). Each trial is an
ordinary `lab train` run in its own process (or `lab resume` of one a dead worker left), so
exact resume, checkpoints and W&B work as for any run. `--count N` is per worker, as
Optuna's `n_trials` and `wandb agent --count`; `--max-trials` (the spec's `run_cap`) caps
the study, all workers together. With `members` K > 1 (`lab sweep --vectorize K`) a worker
claims new trials K at a time and trains them in one process as one population (`lab train
ALGO --vectorize --members ...`); a trial a dead worker left is resumed alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from lab.api import LabError
from lab.experiments.bayes import trial_environment
from lab.experiments.jobs import Job, continue_or_start, run_jobs
from lab.experiments.study import Claim, SweepStudy, hold_until_running
from lab.experiments.sweep import train_args


@dataclass
class WorkerPlan:
    """What this worker runs: at most `count` trials (None: until the sweep has no more), at
    most `parallel` at once, each with the command line's extra flags."""

    count: int | None
    max_trials: int | None
    parallel: int
    train_extra: list[str]
    resume_extra: list[str]
    plugins_dir: str | None
    members: int = 1  # new trials trained together in one process (`--vectorize K`)


def run_worker(study: SweepStudy, plan: WorkerPlan) -> tuple[dict[str, int], int]:
    """Run trials until this worker's count, the study's cap or the grid's end; returns
    ({label: exit code}, how many trials this worker started). A trial without the sweep's
    metric stops the worker (after the trials still running end) with a LabError."""
    problems: list[LabError] = []
    numbers: dict[str, list[int]] = {}  # a running job's trial numbers, by its label

    def ended(job: Job, code: int) -> None:
        for number in numbers.pop(job.label):
            try:
                study.tell(number)
            except LabError as problem:
                problems.append(problem)

    started = [0]

    def claimed() -> Iterator[Job]:
        while not problems and (plan.count is None or started[0] < plan.count):
            claim = study.claim(plan.max_trials)
            if claim is None:
                return
            job = _job(study, plan, claim)
            if plan.members > 1 and job.args[:1] == ["train"]:  # new trials: K of them as one population
                room = plan.members - 1 if plan.count is None else min(plan.members, plan.count - started[0]) - 1
                claims = [claim, *study.claim_more(claim, room, plan.max_trials)]
                job = _population(study, plan, job, claims)
                numbers[job.label] = [c.number for c in claims]
                started[0] += len(claims)
                yield job
                continue
            numbers[job.label] = [claim.number]
            if not job.args:  # a run of this name had finished (a worker died before telling the study)
                claim.lock.release()
                ended(job, 0)
                continue
            started[0] += 1
            job.started = lambda proc, claim=claim, job=job: claim.hold_until_running(job.run_dir, proc)
            yield job

    codes = run_jobs(claimed(), plan.parallel, on_end=ended)
    if problems:
        raise problems[0]
    return codes, started[0]


def _population(study: SweepStudy, plan: WorkerPlan, first: Job, claims: list[Claim]) -> Job:
    """New trials' runs (`first`, the job of `claims[0]`, and the others') trained in one
    process as one population. A claimed trial whose run folder is already there (rare) is
    left to the study: once the lock is released, a worker finds it and resumes it alone."""
    jobs = [first, *(_job(study, plan, claim) for claim in claims[1:])]
    fresh = [job for job in jobs if job.args[:1] == ["train"]]
    own = slice(2, -2 if plan.plugins_dir else None)  # each trial's flags, without the --plugins-dir DIR at the end
    args = ["train", first.args[1], "--vectorize", "--members", json.dumps([job.args[own] for job in fresh])]
    job = Job([*args, *(["--plugins-dir", plan.plugins_dir] if plan.plugins_dir else [])], first.run_dir,
              f"trials {','.join(f'{c.number + 1:03d}' for c in claims)}", {})
    job.started = lambda proc: hold_until_running(claims[0].lock, [j.run_dir for j in fresh], proc)
    return job


def _job(study: SweepStudy, plan: WorkerPlan, claim: Claim) -> Job:
    sweep, run_dir = study.sweep, study.run_dir(claim.number)
    label, shown = f"trial {claim.number + 1:03d}", {k: claim.params.get(k) for k in sweep.searched}
    try:
        if claim.resume:
            args = ["resume", str(run_dir), *plan.resume_extra]
            job = Job([*args, *(["--plugins-dir", plan.plugins_dir] if plan.plugins_dir else [])], run_dir, label, shown)
        else:
            train = [*train_args(claim.params), "--name", run_dir.name, "--experiment", sweep.name, *plan.train_extra]
            job = continue_or_start(train, run_dir, label, shown, claim.params, plan.plugins_dir, change="the spec")
            if job.args[:1] == ["resume"]:
                job.args[2:2] = plan.resume_extra
    except BaseException:
        claim.lock.release()
        raise
    if sweep.method == "bayes":  # the trial's process reports its evaluations to the study (pruning)
        job.env = trial_environment(study.storage, sweep.name, claim.trial_id, sweep.metric,
                                    sweep.spec.get("early_terminate"))
    return job


def trial_jobs(study: SweepStudy) -> list[Job]:
    """Every trial of the study as a job (for the results table), with its worker and host."""
    jobs = []
    for trial in study.trials():
        params = study.params_of(trial)
        shown = {k: params.get(k) for k in study.sweep.searched}
        shown.update(worker=trial.user_attrs.get("worker", "-"), host=trial.user_attrs.get("host", "-"))
        jobs.append(Job([], study.run_dir(trial.number), f"trial {trial.number + 1:03d}", shown))
    return jobs
