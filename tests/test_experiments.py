"""Many runs from one command: `lab train --seeds`, `lab sweep` (grid, random, resume, W&B spec)."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import BAYES, RANDOM_FIXED, run_lab, runs_dir, start_worker, start_workers, write_spec
from lab.api import LabError
from lab.cli import main
from lab.experiments.jobs import parse_seeds
from lab.experiments.study import random_point
from lab.experiments.sweep import load_sweep, train_args
from lab.plugins.wandb_tracker.sweep_agent import wandb_config


def config_of(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# ------------------------------------------------------------------ seeds

def test_seed_lists_parse_and_bad_ones_are_refused() -> None:
    assert parse_seeds("1,2,3") == [1, 2, 3] and parse_seeds("1-3,7") == [1, 2, 3, 7]
    for bad in ("a", "1,1", "", "-1", "3-x"):
        with pytest.raises(LabError):
            parse_seeds(bad)


def test_seeds_make_one_run_each_in_one_group(capsys) -> None:
    code = main(["train", "random", "--env", "CartPole-v1", "--steps", "200", "--eval-episodes", "2",
                 "--seeds", "1,2", "--parallel", "2", "--name", "rs"])
    assert code == 0
    runs = sorted(p.name for p in runs_dir().iterdir())
    assert runs == ["rs-s1", "rs-s2"]
    configs = [config_of(runs_dir() / name) for name in runs]
    assert [c["seed"] for c in configs] == [1, 2]
    assert {c["run"]["experiment"] for c in configs} == {"rs"}  # one W&B group
    assert all(summary_of(runs_dir() / name)["status"] == "finished" for name in runs)
    table = capsys.readouterr().out
    assert "| rs-s1 | 1 | finished |" in table and "| rs-s2 | 2 | finished |" in table


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "1,x"], "--seeds takes integers"),
    (["--seeds", "1,2", "--seed", "3"], "do not mix"),
    (["--seeds", "1,2", "--parallel", "0"], "--parallel takes a positive"),
    (["--parallel", "2"], "--parallel goes with --seeds"),
    (["--seeds", "1,2", "--gamma", "2"], "gamma"),  # a bad value fails once, before any run
])
def test_bad_seed_options_are_one_line(capsys, flags, message) -> None:
    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "200", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_seeds_die_with_their_parent_and_running_the_command_again_continues_them(toy_plugins, capsys) -> None:
    command = ["train", "toy", "--data", "toy-data", "--steps", "400", "--sleep", "0.02", "--log-interval", "10",
               "--name", "kill"]
    proc = subprocess.Popen([sys.executable, "-m", "lab", *command, "--seeds", "1,2", "--parallel", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = [runs_dir() / f"kill-s{seed}" / "metrics.jsonl" for seed in (1, 2)]
    _wait_for(lambda: all(r.is_file() and r.read_text().count("\n") >= 2 for r in rows), 120, "both seeds logged")
    proc.kill()  # kill -9: no chance to pass anything on to its children
    proc.wait()
    summaries = [runs_dir() / f"kill-s{seed}" / "summary.json" for seed in (1, 2)]
    _wait_for(lambda: all(s.is_file() for s in summaries), 60, "the orphaned seeds stopped by themselves")
    for seed in (1, 2):
        summary = summary_of(runs_dir() / f"kill-s{seed}")
        assert summary["status"] == "interrupted" and 0 < summary["global_step"] < 400, summary
    again = run_lab(*command, "--seeds", "1-3", "--parallel", "2", timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resume" in again.stderr and "already exists" not in again.stderr
    for seed in (1, 2, 3):  # the interrupted ones resumed, the missing one started
        summary = summary_of(runs_dir() / f"kill-s{seed}")
        assert summary["status"] == "finished" and summary["global_step"] == 400
    capsys.readouterr()
    assert main([*command, "--seeds", "1-3"]) == 0  # in this process: nothing is left to start
    assert "3 of 3 seeds already finished" in capsys.readouterr().err
    assert main([*command[:-2], "--learning-rate", "0.5", "--name", "kill", "--seeds", "1"]) == 2
    assert "was made with learning_rate=0.1" in capsys.readouterr().err


# ------------------------------------------------------------------ sweeps

def test_grid_sweep_runs_every_combination_ranks_them_and_skips_finished_trials(capsys, tmp_path) -> None:
    spec = write_spec(tmp_path / "grid.yaml", method="grid", metric={"name": "eval/return_mean", "goal": "maximize"},
                      parameters={**RANDOM_FIXED, "seed": {"values": [1, 2]}, "num_envs": {"values": [1, 2]}})
    assert main(["sweep", str(spec), "--parallel", "2"]) == 0
    names = sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("grid-"))
    assert names == ["grid-001", "grid-002", "grid-003", "grid-004"]
    made = {(config_of(runs_dir() / n)["seed"], config_of(runs_dir() / n)["config"]["num_envs"]) for n in names}
    assert made == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert all(config_of(runs_dir() / n)["run"]["experiment"] == "grid" for n in names)
    table = capsys.readouterr().out.strip().splitlines()
    scores = [float(line.split("|")[-2]) for line in table[2:]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)  # ranked by the metric
    stamps = {n: (runs_dir() / n / "summary.json").stat().st_mtime_ns for n in names}
    assert main(["sweep", str(spec)]) == 0  # again: nothing left to do
    assert "nothing left to run: the study holds 4 trials (the whole grid of 4)" in capsys.readouterr().err
    assert stamps == {n: (runs_dir() / n / "summary.json").stat().st_mtime_ns for n in names}


def test_random_sweep_draws_the_same_trials_every_time_within_their_ranges(tmp_path) -> None:
    spec = write_spec(tmp_path / "rnd.yaml", method="random", parameters={
        **RANDOM_FIXED, "algo": {"value": "dqn"}, "gamma": {"min": 0.9, "max": 0.999},
        "learning_rate": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
        "batch_size": {"min": 16, "max": 64}, "exploration_fraction": {"values": [0.1, 0.2]}})
    sweep = load_sweep(spec)
    first, again = [random_point(sweep, n) for n in range(5)], [random_point(load_sweep(spec), n) for n in range(5)]
    assert first == again and len({t["gamma"] for t in first}) == 5
    for t in first:
        assert 0.9 <= t["gamma"] <= 0.999 and 1e-5 <= t["learning_rate"] <= 1e-2
        assert isinstance(t["batch_size"], int) and 16 <= t["batch_size"] <= 64
        assert t["exploration_fraction"] in (0.1, 0.2)
    assert train_args(first[0])[:2] == ["train", "dqn"]
    assert "--learning-rate=" + str(first[0]["learning_rate"]) in train_args(first[0])


@pytest.mark.parametrize("spec, message", [
    ({"method": "bayes", "parameters": RANDOM_FIXED}, "--count"),
    ({"method": "bayes", "parameters": {**RANDOM_FIXED, "gamma": {"distribution": "normal", "mu": 0.9, "sigma": 0.1}}},
     "bayes search takes"),
    ({"method": "grid", "parameters": {**RANDOM_FIXED, "gamma": {"min": 0.9, "max": 0.99}}}, "grid search needs"),
    ({"method": "random", "parameters": RANDOM_FIXED}, "--count"),
    ({"method": "grid", "parameters": {"env": {"value": "CartPole-v1"}}}, "algo: {value: dqn}"),
    ({"method": "grid", "parameters": {**RANDOM_FIXED, "gama": {"values": [0.9]}}}, "unknown flag --gama"),
    ({"method": "grid", "parameters": {**RANDOM_FIXED, "eval_episodes": {"values": [1, -1]}}}, "eval"),
    ({"method": "grid", "metric": {"name": "x", "goal": "up"}, "parameters": RANDOM_FIXED}, "maximize or minimize"),
])
def test_bad_sweep_specs_are_one_line_before_any_run(capsys, tmp_path, spec, message) -> None:
    path = write_spec(tmp_path / "bad.yaml", **spec)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_a_sweep_of_any_size_checks_fast_runs_lazily_and_takes_the_run_flags(tmp_path, capsys) -> None:
    huge = {f"p{i}": {"values": list(range(10))} for i in range(9)}  # 10^9 trials
    spec = write_spec(tmp_path / "huge.yaml", parameters={**RANDOM_FIXED, "steps": {"value": 50}, **huge})
    start = time.monotonic()
    code = main(["sweep", str(spec), "--count", "2", "--device", "cpu", "--wandb", "disabled"])
    err = capsys.readouterr().err
    # the random agent takes no p0..p8: the check refuses them at once, before any trial, whatever the size
    assert code == 2 and "unknown flag --p0 for random" in err, err
    assert time.monotonic() - start < 60
    grid = {"num_envs": {"values": list(range(1, 11))}, "eval_episodes": {"values": list(range(1, 101))}}
    spec = write_spec(tmp_path / "wide.yaml", parameters={**RANDOM_FIXED, "steps": {"value": 40}, **grid,
                                                          **{"seed": {"values": list(range(1000))}}})  # 10^6 trials
    result = run_lab("sweep", str(spec), "--count", "2", "--device", "cpu", "--wandb", "disabled",
                     "--video", "false", timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("wide-")) == ["wide-001", "wide-002"]
    config = config_of(runs_dir() / "wide-002")
    assert config["run"]["device"] == "cpu" and config["run"]["wandb"] == "disabled" and not config["run"]["video"]
    started = [line for line in result.stderr.splitlines() if line.startswith("started trial 001: ")]
    command = shlex.split(started[0].split(": ", 1)[1])
    assert command[:3] == ["lab", "train", "random"] and "--name" in command, "the line runs what ran"


def test_a_sweep_refuses_a_bad_env_id_and_abbreviated_flags_before_any_trial(capsys, tmp_path) -> None:
    spec = write_spec(tmp_path / "envs.yaml", parameters={**RANDOM_FIXED, "env": {"values": ["CartPole-v1",
                                                                                            "CartPol-v1"]}})
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "CartPol-v1" in err and "Traceback" not in err and not runs_dir().exists()
    assert main(["sweep", str(spec), "--wandb-a"]) == 2
    assert "unknown flag --wandb-a" in capsys.readouterr().err, "no abbreviation is taken for --wandb-agent"
    assert main(["train", "random", "--env", "CartPole-v1", "--learning"]) == 2
    assert "unknown flag --learning" in capsys.readouterr().err


def test_a_changed_spec_is_not_mistaken_for_finished_trials(capsys, tmp_path) -> None:
    spec = write_spec(tmp_path / "s.yaml", parameters={**RANDOM_FIXED, "seed": {"values": [1]}})
    assert main(["sweep", str(spec)]) == 0
    write_spec(tmp_path / "s.yaml", parameters={**RANDOM_FIXED, "seed": {"values": [5]}})
    assert main(["sweep", str(spec)]) == 2
    assert "give the changed sweep another `name:`" in capsys.readouterr().err


def ctrl_c_once_the_first_trial_logs(spec: Path, first_trial: str, *flags: str) -> None:
    """Start `lab sweep SPEC FLAGS`, Ctrl-C it once its first trial has logged two rows; it exits 130."""
    proc = start_worker(spec, *flags)
    metrics = runs_dir() / first_trial / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the first trial never logged"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_and_running_it_again_finishes_it(toy_plugins, tmp_path) -> None:
    # a trial sleeps 10 ms a step: the first is still running when Ctrl-C comes (two rows are
    # logged by step 20, and 380 steps take at least 3.8 s on any machine), with no long budget
    spec = write_spec(tmp_path / "long.yaml", parameters={
        "algo": {"value": "toy"}, "data": {"value": "toy-data"}, "steps": {"value": 400}, "sleep": {"value": 0.01},
        "log_interval": {"value": 10}, "seed": {"values": [1, 2]}})
    ctrl_c_once_the_first_trial_logs(spec, "long-001")
    first = summary_of(runs_dir() / "long-001")
    assert first["status"] == "interrupted" and first["global_step"] < 400
    assert not (runs_dir() / "long-002").exists()  # no new trial starts after Ctrl-C
    again = run_lab("sweep", str(spec), timeout=600)
    assert again.returncode == 0, again.stderr
    for name in ("long-001", "long-002"):
        summary = summary_of(runs_dir() / name)
        assert summary["status"] == "finished" and summary["global_step"] == 400


def test_the_same_spec_serves_a_wandb_agent(tmp_path) -> None:
    spec = write_spec(tmp_path / "w.yaml", method="bayes", metric={"name": "eval/return_mean", "goal": "maximize"},
                      parameters={**RANDOM_FIXED, "gamma": {"min": 0.9, "max": 0.99}})
    config = wandb_config(load_sweep(spec))
    assert config["method"] == "bayes" and config["parameters"]["algo"] == {"value": "random"}
    assert config["command"] == ["${env}", "${interpreter}", "-m", "lab", "train", "${args}"]


def test_train_accepts_what_a_wandb_agent_passes(capsys) -> None:
    """W&B's ${args}: --algo=NAME and field names with underscores."""
    assert main(["train", "--algo=random", "--env=CartPole-v1", "--steps=50", "--eval_episodes=1", "--name=agent"]) == 0
    doc = config_of(runs_dir() / "agent")
    assert doc["algo"] == "random" and doc["run"]["eval_episodes"] == 1


# ------------------------------------------------------------------ bayes sweeps (Optuna)

@pytest.mark.slow
def test_two_bayes_workers_run_their_count_each_and_draw_distinct_trials(toy_plugins, tmp_path, capsys) -> None:
    import optuna

    spec = write_spec(tmp_path / "shared.yaml", method="bayes", metric={"name": "eval/accuracy", "goal": "maximize"},
                      parameters=BAYES)
    outs = start_workers(spec, 2, "--count", "3")
    names = sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("shared-"))
    assert names == [f"shared-{i:03d}" for i in range(1, 7)], "--count is per worker: six trials, each run once"
    assert all(summary_of(runs_dir() / n)["status"] == "finished" for n in names)
    storage = f"sqlite:///{(runs_dir() / 'shared.sweep' / 'optuna.db').resolve()}"
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 6 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.params["learning_rate"] for t in trials}) == 6, "no two trials drew the same parameters"
    assert len({t.user_attrs["worker"] for t in trials}) == 2 and all(err.count("started trial") == 3 for _, err in outs)
    for trial in trials:  # what the study was told is what the trial's run says
        assert trial.value == pytest.approx(summary_of(runs_dir() / f"shared-{trial.number + 1:03d}")["best"])
        assert config_of(runs_dir() / f"shared-{trial.number + 1:03d}")["config"]["learning_rate"] == \
            pytest.approx(trial.params["learning_rate"])
    assert main(["sweep", str(spec), "--max-trials", "6"]) == 0  # in this process: the study is full
    again = capsys.readouterr()
    assert "started trial" not in again.err and "nothing left to run: the study holds 6 trials (--max-trials 6)" in again.err
    table = [line for line in again.out.splitlines() if line.startswith("| shared-")]
    assert len(table) == 6 and f"study: {storage}" in again.err
    assert main(["sweep", str(spec), "--status"]) == 0
    status = capsys.readouterr().out
    assert "| worker | host |" in status and status.count("| finished |") == 6


@pytest.mark.slow
def test_three_workers_run_each_grid_point_exactly_once(tmp_path) -> None:
    spec = write_spec(tmp_path / "g.yaml", method="grid", parameters={
        **RANDOM_FIXED, "seed": {"values": [1, 2, 3]}, "num_envs": {"values": [1, 2]}})
    outs = start_workers(spec, 3, "--video", "false", "--trackers", "jsonl")
    names = sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("g-"))
    assert names == [f"g-{i:03d}" for i in range(1, 7)]
    made = sorted((config_of(runs_dir() / n)["seed"], config_of(runs_dir() / n)["config"]["num_envs"]) for n in names)
    assert made == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]
    assert sum(err.count("started trial") for _, err in outs) == 6, "no point ran twice"


@pytest.mark.slow
def test_a_bayes_sweep_prunes_with_hyperband_and_says_so(toy_plugins, tmp_path, capsys) -> None:
    spec = write_spec(tmp_path / "pruned.yaml", method="bayes", metric={"name": "eval/accuracy", "goal": "maximize"},
                      early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3},
                      parameters={**BAYES, "steps": {"value": 60}, "eval_interval": {"value": 10}})
    # six trials: TPE (seeded by the sweep's name) and hyperband prune the 4th to 6th here
    result = run_lab("sweep", str(spec), "--count", "6", timeout=900)
    assert result.returncode == 0, result.stderr
    statuses = {p.name: summary_of(p)["status"] for p in runs_dir().iterdir() if p.name.startswith("pruned-")}
    assert len(statuses) == 6 and set(statuses.values()) <= {"finished", "pruned"}
    pruned = [name for name, status in statuses.items() if status == "pruned"]
    assert pruned, "hyperband stopped some trials"
    for name in pruned:  # stopped cleanly: a checkpoint, and fewer steps than the budget
        assert (runs_dir() / name / "checkpoints" / "latest.pt").is_file()
        assert summary_of(runs_dir() / name)["global_step"] < 60
    assert any(f"| {name} |" in line and "| pruned |" in line for line in result.stdout.splitlines() for name in pruned)
    assert main(["runs"]) == 0
    assert "pruned" in capsys.readouterr().out


def test_bayes_specs_are_checked_before_any_trial(toy_plugins, tmp_path, capsys) -> None:
    normal = write_spec(tmp_path / "n.yaml", method="bayes", parameters={**BAYES, "learning_rate": {
        "distribution": "normal", "mu": 0.1, "sigma": 0.01}})
    assert main(["sweep", str(normal), "--count", "2"]) == 2
    assert "bayes search takes values and min/max ranges" in capsys.readouterr().err
    spec = write_spec(tmp_path / "c.yaml", method="bayes", parameters=BAYES)
    assert main(["sweep", str(spec)]) == 2
    assert "needs --count" in capsys.readouterr().err
    assert not runs_dir().exists() or not any(p.name.startswith("c-") for p in runs_dir().iterdir())


@pytest.mark.slow
def test_an_interrupted_bayes_trial_resumes_when_the_sweep_runs_again(toy_plugins, tmp_path) -> None:
    import optuna

    spec = write_spec(tmp_path / "slow.yaml", method="bayes", metric={"name": "eval/accuracy", "goal": "maximize"},
                      parameters={**BAYES, "steps": {"value": 300}, "sleep": {"value": 0.01},
                                  "log_interval": {"value": 10}})
    ctrl_c_once_the_first_trial_logs(spec, "slow-001", "--count", "2")
    first = summary_of(runs_dir() / "slow-001")
    assert first["status"] == "interrupted" and first["global_step"] < 300
    learning_rate = config_of(runs_dir() / "slow-001")["config"]["learning_rate"]
    again = run_lab("sweep", str(spec), "--count", "2", timeout=600)
    assert again.returncode == 0, again.stderr
    assert "lab resume" in again.stderr and "slow-001" in again.stderr, "the interrupted trial is resumed, not redrawn"
    for name in ("slow-001", "slow-002"):
        summary = summary_of(runs_dir() / name)
        assert summary["status"] == "finished" and summary["global_step"] == 300
    assert config_of(runs_dir() / "slow-001")["config"]["learning_rate"] == learning_rate
    storage = f"sqlite:///{(runs_dir() / 'slow.sweep' / 'optuna.db').resolve()}"
    trials = optuna.load_study(study_name="slow", storage=storage).get_trials()
    assert len(trials) == 2 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
