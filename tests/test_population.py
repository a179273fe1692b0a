"""Seeds as a batch dimension (`lab train ALGO --seeds 1-3 --vectorize`): each member of a
population trains as its separate run does (to float tolerance: the stacked products round
differently), is an ordinary run to everything downstream, and a stopped population, run
again, continues every member exactly."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import yaml
from test_exact_runs import start, wait_for_step

from conftest import comparable, one_line_error, read_jsonl, runs_dir
from conftest import lab as lab_cli
from lab.cli import main

CASES = {  # ppo: minibatches, epochs and normalisers; CartPole's episodes end at different steps in each member
    "ppo": ["--env", "CartPole-v1", "--steps", "1024", "--num-envs", "4", "--n-steps", "64", "--n-epochs", "4",
            "--batch-size", "64", "--log-interval", "256", "--eval-interval", "512", "--norm-obs", "--norm-reward"],
    # a2c: RMSprop, one step on each whole rollout, Gaussian actions
    "a2c": ["--env", "Pendulum-v1", "--steps", "1000", "--num-envs", "4", "--log-interval", "100",
            "--eval-interval", "500"],
}
QUIET = ["--eval-episodes", "2", "--video", "false"]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(CASES))
def test_a_member_trains_as_its_separate_run_and_is_an_ordinary_run(algo, capsys):
    assert main(["train", algo, *CASES[algo], *QUIET, "--seed", "2", "--name", "alone"]) == 0
    assert main(["train", algo, *CASES[algo], *QUIET, "--seeds", "1-3", "--vectorize", "--name", "pop"]) == 0
    alone, member = read_jsonl(runs_dir() / "alone" / "metrics.jsonl"), read_jsonl(runs_dir() / "pop-s2" / "metrics.jsonl")
    assert len(alone) == len(member) and any("train/loss" in row for row in member)
    for mine, theirs in zip(comparable(member), comparable(alone), strict=True):
        assert mine.keys() == theirs.keys() and mine["global_step"] == theirs["global_step"]
        for key, value in theirs.items():  # the same episodes, losses and evaluations
            assert value == mine[key] if isinstance(value, str) else close(value, mine[key]), (key, mine, theirs)
    # every member is an ordinary run: its seed, its summary, its own checkpoint (not the population's)
    for seed in (1, 2, 3):
        run = runs_dir() / f"pop-s{seed}"
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    sizes = [(runs_dir() / name / "checkpoints" / "latest.pt").stat().st_size for name in ("alone", "pop-s2")]
    assert sizes[1] < 1.2 * sizes[0], sizes
    capsys.readouterr()
    code, err = lab_cli(capsys, "eval", str(runs_dir() / "pop-s3"), "--episodes", "2")
    assert code == 0, err
    code, err = lab_cli(capsys, "resume", str(runs_dir() / "pop-s1"), "--steps", str(2 * int(CASES[algo][3])))
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.slow
def test_a_stopped_population_run_again_logs_what_an_uninterrupted_one_logs(capsys):
    common = ["train", "ppo", *CASES["ppo"], *QUIET, "--steps", "3072", "--seeds", "1-2", "--vectorize"]
    assert main([*common, "--name", "straight"]) == 0
    proc = start(*common, "--name", "stopped")  # a real process gets a real SIGINT
    wait_for_step(proc, runs_dir() / "stopped-s2", 1024)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err
    statuses = [json.loads((runs_dir() / f"stopped-s{s}" / "summary.json").read_text())["status"] for s in (1, 2)]
    assert statuses == ["interrupted", "interrupted"]
    capsys.readouterr()
    code, err = lab_cli(capsys, *common, "--name", "stopped")  # the same command continues both members
    assert code == 0, err
    for seed in (1, 2):
        assert comparable(read_jsonl(runs_dir() / f"stopped-s{seed}" / "metrics.jsonl")) == \
            comparable(read_jsonl(runs_dir() / f"straight-s{seed}" / "metrics.jsonl"))


def test_what_cannot_be_vectorized_is_refused_in_one_line(capsys):
    one_line_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--seeds", "1-2", "--vectorize"],
                   "--vectorize", "dqn", "drop --vectorize")
    one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--vectorize"], "pass --seeds")
    one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--seeds", "1-2", "--vectorize",
                            "--parallel", "2"], "drop --parallel")


@pytest.mark.slow
def test_a_member_that_diverges_ends_alone_and_the_others_finish(capsys):
    plugins = str(Path(__file__).parent / "population_plugins")
    code, err = lab_cli(capsys, "train", "ppo-diverging", *CASES["ppo"], *QUIET, "--plugins-dir", plugins,
                        "--seeds", "1-3", "--vectorize", "--name", "pop")
    assert code == 1 and "Traceback" not in err, err
    summaries = {seed: json.loads((runs_dir() / f"pop-s{seed}" / "summary.json").read_text()) for seed in (1, 2, 3)}
    assert summaries[2]["status"] == "diverged" and summaries[2]["global_step"] < 1024
    for seed in (1, 3):
        assert summaries[seed]["status"] == "finished" and math.isfinite(summaries[seed]["train/loss"])
