"""Sweep workers beyond one process (issue 33): a worker killed with kill -9 leaves its trial to
the next, a journal file shares a study without a server, a metric no trial logs stops the
sweep, secrets never show, and every storage mistake is one line."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from conftest import (
    BAYES,
    RANDOM_FIXED,
    comparable,
    lab,
    one_line_error,
    read_jsonl,
    run_lab,
    runs_dir,
    start_worker,
    start_workers,
    write_spec,
)
from lab.experiments.storage import Storage, StorageKind, shown_url
from lab.run.rundir import lock_holder


def wait_for(condition, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_with_kill_9_leaves_its_trial_to_the_next_worker_which_resumes_it_exactly(
        toy_plugins, tmp_path) -> None:
    import optuna

    # a trial sleeps 10 ms a step: it is still running when its worker is killed, on any machine
    spec = write_spec(tmp_path / "k.yaml", method="bayes", metric={"name": "eval/accuracy", "goal": "maximize"},
                      parameters={**BAYES, "steps": {"value": 300}, "sleep": {"value": 0.01},
                                  "log_interval": {"value": 10}})
    worker = start_worker(spec, "--count", "1")
    run = runs_dir() / "k-001"
    metrics = run / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, "the first trial never logged")
    worker.kill()  # kill -9: the worker cannot tell anyone anything
    worker.communicate(timeout=60)
    # its trial notices its supervisor died, saves and stops (lab.signals.SUPERVISOR)
    wait_for(lambda: not lock_holder(run) and (run / "summary.json").is_file(), "the orphaned trial never stopped", 60)
    storage = f"sqlite:///{(runs_dir() / 'k.sweep' / 'optuna.db').resolve()}"
    [left] = optuna.load_study(study_name="k", storage=storage).get_trials()
    assert left.state == optuna.trial.TrialState.RUNNING, "left for the next worker, not failed"

    again = run_lab("sweep", str(spec), "--count", "1", timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"started trial 001: lab resume {run}" in again.stderr, again.stderr
    assert not (runs_dir() / "k-002").exists(), "the next worker's one trial was the one left behind"
    [done] = optuna.load_study(study_name="k", storage=storage).get_trials()
    assert done.state == optuna.trial.TrialState.COMPLETE and done.number == 0
    # exact: the resumed trial logged what one uninterrupted run of its settings logs
    learning_rate = yaml.safe_load((run / "config.yaml").read_text())["config"]["learning_rate"]
    straight = run_lab("train", "toy", "--data", "toy-data", "--steps", "300", "--sleep", "0", "--log-interval", "10",
                       f"--learning-rate={learning_rate}", "--name", "straight", timeout=600)
    assert straight.returncode == 0, straight.stderr
    assert comparable(read_jsonl(metrics)) == comparable(read_jsonl(runs_dir() / "straight" / "metrics.jsonl"))


@pytest.mark.slow
def test_a_journal_file_shares_a_study_between_workers(toy_plugins, tmp_path) -> None:
    import optuna

    spec = write_spec(tmp_path / "j.yaml", method="bayes", metric={"name": "eval/accuracy", "goal": "maximize"},
                      parameters=BAYES)
    url = f"journal:{tmp_path}/study.journal"  # (a plain path is read the same: test_a_storage_password_is_masked...)
    outs = start_workers(spec, 2, "--count", "2", "--storage", url)
    path = url.removeprefix("journal:")
    study = optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(path)))
    trials = study.get_trials()
    assert len(trials) == 4 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.params["learning_rate"] for t in trials}) == 4
    assert sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("j-")) == [f"j-00{i}" for i in range(1, 5)]
    assert f"study: journal:{Path(path).resolve()}" in outs[0][1]


def test_a_metric_no_trial_logs_stops_the_sweep_after_the_first_trial(tmp_path, capsys) -> None:
    spec = write_spec(tmp_path / "m.yaml", method="random", metric={"name": "eval/retrun_mean", "goal": "maximize"},
                      parameters={**RANDOM_FIXED, "seed": {"min": 1, "max": 100}})
    code, err = lab(capsys, "sweep", str(spec), "--count", "3", "--video", "false", "--trackers", "jsonl")
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    for part in ("error: trial 001", "logged no 'eval/retrun_mean'", "eval/return_mean", "fix the spec's `metric:"):
        assert part in last, last
    assert sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("m-")) == ["m-001"], "no second trial"


def test_a_study_made_by_another_spec_is_refused(tmp_path, capsys) -> None:
    spec = write_spec(tmp_path / "s.yaml", method="random", parameters={**RANDOM_FIXED, "seed": {"min": 1, "max": 9}})
    assert run_lab("sweep", str(spec), "--count", "1", "--video", "false", "--trackers", "jsonl").returncode == 0
    write_spec(tmp_path / "s.yaml", method="random", parameters={**RANDOM_FIXED, "seed": {"min": 1, "max": 5}})
    one_line_error(capsys, ["sweep", str(spec), "--count", "1"], "the study 's'", "was made by another spec",
                   "give the changed sweep another `name:`")


def test_a_storage_password_is_masked_and_kept_out_of_command_lines(monkeypatch) -> None:
    storage = Storage.parse("postgresql://lab:s3cret@db.example.org:5433/sweeps")
    assert storage.kind == StorageKind.SERVER and storage.shown == "postgresql://lab:***@db.example.org:5433/sweeps"
    assert "s3cret" not in storage.without_password and storage.environment() == {"LAB_STORAGE_PASSWORD": "s3cret"}
    assert shown_url("mysql://u@h/db") == "mysql://u@h/db"
    monkeypatch.setenv("LAB_STORAGE_PASSWORD", "fromenv")
    assert "fromenv" in Storage.parse("postgresql://lab@h/db").sqlalchemy_url()
    assert Storage.parse("runs/x.journal").kind == Storage.parse("journal:x").kind == StorageKind.JOURNAL


def test_an_unreachable_database_is_one_line_naming_the_host_without_the_password(tmp_path, capsys) -> None:
    spec = write_spec(tmp_path / "u.yaml", method="random", parameters={**RANDOM_FIXED, "seed": {"min": 1, "max": 9}})
    line = one_line_error(capsys, ["sweep", str(spec), "--count", "1", "--storage",
                                   "postgresql://lab:s3cret@127.0.0.1:9/sweeps"],
                          "cannot open the sweep's study at postgresql://lab:***@127.0.0.1:9/sweeps", "server runs")
    assert "s3cret" not in line
    one_line_error(capsys, ["sweep", str(spec), "--count", "1", "--storage", "redis://h/0"],
                   "is not a storage the lab shares a sweep in", "journal:PATH")


@pytest.mark.parametrize("name", ["experiment", "name", "runs-dir"])
def test_the_sweeps_own_settings_are_refused_as_parameters(tmp_path, capsys, name) -> None:
    spec = write_spec(tmp_path / "o.yaml", parameters={**RANDOM_FIXED, name: {"value": "x"}})
    one_line_error(capsys, ["sweep", str(spec)], f"parameter '{name}' is the sweep's own", "remove it from the spec")


def test_a_signal_to_a_worker_is_passed_to_its_trials(toy_plugins, tmp_path) -> None:
    """(Slurm's preemption sends SIGTERM to the worker): its trial saves and stays RUNNING in the study."""
    spec = write_spec(tmp_path / "t.yaml", method="grid", metric={"name": "eval/accuracy", "goal": "maximize"},
                      parameters={**BAYES, "learning_rate": {"values": [0.1, 0.2]}, "steps": {"value": 3000},
                                  "sleep": {"value": 0.01}, "log_interval": {"value": 10}})
    worker = start_worker(spec)
    metrics = runs_dir() / "t-001" / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, "the first trial never logged")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 128 + signal.SIGTERM, err
    summary = yaml.safe_load((runs_dir() / "t-001" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and not (runs_dir() / "t-002").exists()
    assert os.path.isfile(runs_dir() / "t-001" / "checkpoints" / "latest.pt")


def test_launcher_slurm_without_slurm_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without Slurm's commands
    spec = write_spec(tmp_path / "l.yaml", parameters={**RANDOM_FIXED, "seed": {"values": [1, 2]}})
    one_line_error(capsys, ["sweep", str(spec), "--launcher", "slurm", "--workers", "2"],
                   "--launcher slurm needs Slurm's sbatch, squeue, scontrol on PATH", "drop --launcher")
    one_line_error(capsys, ["train", "random", "--env", "CartPole-v1", "--seeds", "1-2", "--launcher", "slurm"],
                   "needs Slurm's sbatch")
    one_line_error(capsys, ["sweep", str(spec), "--workers", "2"], "--workers goes with --launcher slurm")
    one_line_error(capsys, ["train", "random", "--env", "CartPole-v1", "--launcher", "slurm"], "--launcher goes with --seeds")


def test_slurm_times_read_as_sbatch_reads_them() -> None:
    from lab.api import LabError
    from lab.experiments.launch import time_minutes

    assert [time_minutes(t) for t in ("10", "4:00:00", "90:30", "1-00:00", "2-1")] == [10, 240, 91, 1440, 2940]
    for bad in ("4h", "", "0"):
        with pytest.raises(LabError, match="--time"):
            time_minutes(bad)


@pytest.mark.slow
def test_a_lone_bayes_worker_is_reproducible_and_a_restarted_one_draws_new_trials(toy_plugins, tmp_path) -> None:
    import optuna

    spec = write_spec(tmp_path / "r.yaml", method="bayes", metric={"name": "eval/accuracy", "goal": "maximize"},
                      parameters=BAYES)

    def learning_rates(storage: str) -> list[float]:
        trials = optuna.load_study(study_name="r", storage=storage).get_trials()
        return [t.params["learning_rate"] for t in sorted(trials, key=lambda t: t.number)]

    restarted = f"sqlite:///{tmp_path / 'restarted.db'}"
    for _ in range(2):  # two workers one after the other, one trial each
        assert run_lab("sweep", str(spec), "--count", "1", "--storage", restarted, timeout=600).returncode == 0
    once = f"sqlite:///{tmp_path / 'once.db'}"
    assert run_lab("sweep", str(spec), "--count", "2", "--storage", once, "--runs-dir", str(tmp_path / "again"),
                   timeout=600).returncode == 0
    drawn = learning_rates(restarted)
    assert len(set(drawn)) == 2, "a restarted sweep draws a new trial, not its first one again"
    assert learning_rates(once) == drawn, "trial N depends on the spec, N and the study's history, not on the worker"
