"""Sweep workers and seeds as the tasks of a Slurm job array, on a real single-node Slurm
(issue 33): slurmctld, slurmd and munged started for the test (tests/slurm_cluster.py;
skipped with the reason where slurm-wlm is missing), jobs submitted by the lab through submitit."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
from slurm_cluster import slurm_binaries_missing, start_local_slurm

from conftest import comparable, read_jsonl, run_lab, runs_dir

MISSING = slurm_binaries_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.slow]


@pytest.fixture
def slurm(tmp_path):
    cluster = start_local_slurm(tmp_path / "slurm")
    yield cluster
    cluster.stop()


def lab_on(slurm, *args: str) -> subprocess.CompletedProcess:
    """`lab ARGS` as a user on the cluster's login node runs it."""
    import os

    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **slurm.env})


def wait_for(condition, what, seconds: float = 300) -> None:
    """Poll `condition`; past `seconds`, fail with `what` (a callable says what it saw then)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.1)


def task_logs(folder) -> str:
    """The last lines of every task log submitit wrote in `folder`, for a failure's message."""
    return "\n".join(f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                     for log in sorted(folder.glob("*_log.*")))


def status_of(run) -> str | None:
    path = run / "summary.json"
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError):
        return None


def test_a_job_array_of_workers_finishes_a_sweep_and_a_requeued_task_resumes_its_trial_exactly(
        toy_plugins, tmp_path, slurm) -> None:
    import optuna

    # four trials of about 6 s each (10 ms a step) on four array tasks, two at a time on two CPUs
    spec = tmp_path / "q.yaml"
    spec.write_text(yaml.safe_dump({"method": "grid", "metric": {"name": "eval/accuracy", "goal": "maximize"},
                                    "parameters": {"algo": {"value": "toy"}, "data": {"value": "toy-data"},
                                                   "steps": {"value": 600}, "sleep": {"value": 0.01},
                                                   "log_interval": {"value": 20},
                                                   "learning_rate": {"values": [0.1, 0.2, 0.3, 0.4]}}}))
    submitted = lab_on(slurm, "sweep", str(spec), "--launcher", "slurm", "--workers", "4", "--time", "10")
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted Slurm job array" in submitted.stderr and "4 tasks" in submitted.stderr
    first = runs_dir() / "q-001"
    wait_for(lambda: (first / "metrics.jsonl").is_file() and (first / "metrics.jsonl").read_text().count("\n") >= 3,
             "trial 001 never logged")
    storage = f"sqlite:///{(runs_dir() / 'q.sweep' / 'optuna.db').resolve()}"
    worker = optuna.load_study(study_name="q", storage=storage).get_trials()[0].user_attrs["worker"]
    task = worker.removeprefix("slurm ")
    slurm.run("scontrol", "requeue", task)  # as a preemption does: SIGTERM to every process of the task
    wait_for(lambda: status_of(first) == "interrupted", "the requeued task's trial did not save and stop", 60)

    def state_of(job: str) -> str:
        return slurm.run("squeue", "-h", "-j", job, "-o", "%T", check=False).strip()

    # Slurm holds a requeued job until the old one's credential expired (6 s here, tests/slurm_cluster.py):
    # forcing it to start sooner raced the old task's ending ("Job credential revoked", the job killed)
    wait_for(lambda: state_of(task) in ("PENDING", "RUNNING", ""), "the task was not requeued", 60)

    def done() -> bool:
        trials = optuna.load_study(study_name="q", storage=storage).get_trials()
        return len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    wait_for(done, "the sweep did not finish")
    wait_for(lambda: not slurm.job_ids(), "the array did not end")
    assert sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("q-")) == [f"q-00{i}" for i in range(1, 5)]
    assert all(status_of(runs_dir() / f"q-00{i}") == "finished" for i in range(1, 5))
    # nothing lost, nothing twice: trial 001 resumed from its checkpoint and logged what one straight run logs
    straight = run_lab("train", "toy", "--data", "toy-data", "--steps", "600", "--log-interval", "20",
                       "--learning-rate=0.1", "--name", "straight", timeout=300)
    assert straight.returncode == 0, straight.stderr
    assert comparable(read_jsonl(first / "metrics.jsonl")) == \
        comparable(read_jsonl(runs_dir() / "straight" / "metrics.jsonl"))


def test_seeds_as_a_job_array_write_ordinary_runs(toy_plugins, slurm) -> None:
    submitted = lab_on(slurm, "train", "toy", "--data", "toy-data", "--steps", "40", "--name", "sd", "--seeds", "1-2",
                       "--launcher", "slurm")
    assert submitted.returncode == 0, submitted.stderr
    wait_for(lambda: not slurm.job_ids(), "the array did not end")
    for seed in (1, 2):
        run = runs_dir() / f"sd-s{seed}"
        assert status_of(run) == "finished", list(run.iterdir()) if run.exists() else "no run"
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed


def test_a_time_limit_warning_checkpoints_the_seed_and_submitit_requeues_it(toy_plugins, slurm) -> None:
    """SIGUSR2, as Slurm sends it before a time limit (`--signal=USR2@90`): the run saves and
    stops, submitit calls `LabCommand.checkpoint` and requeues the task, which resumes the run."""
    submitted = lab_on(slurm, "train", "toy", "--data", "toy-data", "--steps", "600", "--sleep", "0.01",
                       "--log-interval", "20", "--name", "tl", "--seeds", "1", "--launcher", "slurm")
    assert submitted.returncode == 0, submitted.stderr
    run = runs_dir() / "tl-s1"
    wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 3,
             "the seed never logged")
    [job] = slurm.job_ids()
    slurm.run("scancel", "--signal=USR2", job)  # what Slurm sends 90 s before the task's time limit
    wait_for(lambda: status_of(run) == "interrupted", "the run did not save and stop on SIGUSR2", 60)

    def finished() -> bool:  # submitit requeued the task, which starts once Slurm's hold (6 s here) is over
        return status_of(run) == "finished"

    def why() -> str:
        state = slurm.run("squeue", "-h", "-j", job, "-o", "%T %r", check=False).strip()
        return f"the requeued task did not finish the run (squeue: {state!r})\n{task_logs(runs_dir() / 'tl.slurm')}"

    wait_for(finished, why, 180)
    straight = run_lab("train", "toy", "--data", "toy-data", "--steps", "600", "--log-interval", "20", "--seed", "1",
                       "--name", "straight", timeout=300)
    assert straight.returncode == 0, straight.stderr
    assert comparable(read_jsonl(run / "metrics.jsonl")) == \
        comparable(read_jsonl(runs_dir() / "straight" / "metrics.jsonl"))
