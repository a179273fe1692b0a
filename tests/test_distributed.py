"""Data-parallel training under a real `torchrun` (2 CPU processes on gloo) against one process.

The runs are small (a 300-image folder, CartPole for 20k steps) so the file stays within a
few minutes on a busy 2-core machine; each torchrun start costs a few seconds of imports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import lab
from lab import distributed
from lab.api import LabError
from lab.cli import main
from lab.rl.normalize import RunningMeanStd
from lab.rl.onpolicy import merge_statistics
from lab.run.checkpoint import load_checkpoint
from tests.conftest import read_jsonl, shared_folder
from tests.test_exact_runs import wait_for_step
from tests.test_supervised import blobs_folder

pytestmark = [
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="this torch build has no torch.distributed gloo backend, so torchrun cannot start CPU processes",
    ),
    pytest.mark.slow,
]

ENV = {"WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
LOGREG = ["logreg", "--data", "image-folder:blobs", "--epochs", "3", "--validation-size", "30", "--batch-size", "16",
          "--image-size", "12"]


def lab_command(args: list[str], processes: int, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lab ARGS` as one process, or under `torchrun --nproc_per_node N --standalone -m lab`."""
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                                          "--standalone"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run([sys.executable, *launcher, "-m", "lab", *args], capture_output=True, text=True,
                            env={**env, **ENV}, timeout=timeout)
    return result


def evaluations(run: Path, key: str) -> dict[int, float]:
    return {row["global_step"]: row[key] for row in read_jsonl(run / "metrics.jsonl") if key in row}


def train_logreg_once_and_twice(root: Path) -> None:
    blobs_folder(root / "blobs", per_class=100)  # 270 training images, 30 held out, 30 test
    runs = root / "runs"
    common = ["--data-dir", str(root), "--runs-dir", str(runs)]
    one = lab_command(["train", *LOGREG, *common, "--name", "one"], 1)
    assert one.returncode == 0, one.stderr
    two = lab_command(["train", *LOGREG, *common], 2)
    assert two.returncode == 0, two.stderr
    (root / "two-stderr.txt").write_text(two.stderr)


@pytest.fixture(scope="session")
def supervised(tmp_path_factory) -> dict[str, Path]:
    """The same logistic regression trained by one process (runs/one) and by two (default
    name), once a session (the tests read the runs; one that resumes them copies them)."""
    root = shared_folder(tmp_path_factory, "distributed-logreg", train_logreg_once_and_twice)
    runs = root / "runs"
    made = [path for path in runs.iterdir() if path.name != "one"]
    assert len(made) == 1, made  # rank 0 chose the (timestamped) name; rank 1 made nothing
    return {"root": root, "one": runs / "one", "two": made[0], "two_output": (root / "two-stderr.txt").read_text()}


def test_two_processes_compute_the_same_evaluations_as_one(supervised) -> None:
    # each rank trains on its half of every batch of 16 and the gradients are averaged: the
    # same steps as one process on the whole batch, so (no dropout, no augmentation) the same
    # evaluations up to float rounding
    one, two = supervised["one"], supervised["two"]
    for key in ("val/loss", "eval/loss", "eval/accuracy", "val/accuracy"):
        a, b = evaluations(one, key), evaluations(two, key)
        assert a.keys() == b.keys() and len(a) == 3
        assert all(abs(a[step] - b[step]) < 1e-4 for step in a), (key, a, b)
    docs = [yaml.safe_load((run / "config.yaml").read_text()) for run in (one, two)]
    assert docs[0]["world_size"] == 1 and docs[1]["world_size"] == 2
    assert docs[0]["total_steps"] == docs[1]["total_steps"] == 3 * (240 // 16)  # an epoch is one pass by all


def test_rank_zero_alone_writes_the_run(supervised) -> None:
    two = supervised["two"]
    rows = read_jsonl(two / "metrics.jsonl")
    logged = [(row["global_step"], tuple(sorted(row)[:3])) for row in rows]
    assert len(logged) == len(set(logged))  # no row twice: one process appended
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.pt", "latest.pt"]
    assert len(list((two / "media").glob("confusion_matrix-*.png"))) == 1
    output = supervised["two_output"]
    lines = output.splitlines()  # rank 0 alone prints
    assert sum(line.startswith("run: ") for line in lines) == 1 and output.count("finished: logreg") == 1
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "finished"
    model = lab.load(two)  # a 2-process checkpoint loads in one process: the unwrapped model
    try:
        assert model.ctx.world_size == 1
        assert abs(model.evaluate()["eval/accuracy"] - evaluations(two, "eval/accuracy")[summary["best_step"]]) < 1e-6
    finally:
        model.close()


def test_a_two_process_run_resumes_on_one_process(supervised, capsys, tmp_path) -> None:
    # the data position is a batch index and batch k of all ranks together does not depend on
    # their number: one process continues the 2-process run where one process would be
    runs = {name: tmp_path / "resumed" / name for name in ("one", "two")}
    for name, run in runs.items():
        shutil.copytree(supervised[name], run)
        assert main(["resume", str(run), "--epochs", "4"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: the checkpoint was written by 2 processes and this run has 1") == 1
    assert "data position continue" in err
    a, b = (evaluations(runs[name], "eval/loss") for name in ("one", "two"))
    assert sorted(b) == [15, 30, 45, 60]
    assert all(abs(a[step] - b[step]) < 1e-4 for step in a), (a, b)
    assert yaml.safe_load((runs["two"] / "config.yaml").read_text())["world_size"] == 1


def test_ppo_learns_cartpole_on_two_processes_as_on_one(tmp_path) -> None:
    # --num-envs (8 in the CartPole preset) and --steps count all processes: 4 envs each here
    args = ["train", "ppo", "--env", "CartPole-v1", "--steps", "20000", "--runs-dir", str(tmp_path)]
    assert main([*args, "--name", "one"]) == 0  # one process: this one
    two = lab_command([*args, "--name", "two"], 2)
    assert two.returncode == 0, two.stderr
    best = {}
    for name in ("one", "two"):
        run = tmp_path / name
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["global_step"] == 20224
        best[name] = summary["best"]
        steps = [row["global_step"] for row in read_jsonl(run / "metrics.jsonl")]
        assert steps == sorted(steps)  # rank 0 logs every rank's episodes, each at its own step
    assert best["one"] > 150 and best["two"] > 150, best  # random play scores about 22
    episodes = {name: len(evaluations(tmp_path / name, "train/episode_return")) for name in ("one", "two")}
    assert 0.5 < episodes["two"] / episodes["one"] < 2, episodes  # both ranks' episodes are logged
    evaluated = [len(evaluations(tmp_path / name, "eval/return_mean")) for name in ("one", "two")]
    assert evaluated[0] == evaluated[1]  # rank 0 alone evaluates, as often as one process does
    assert yaml.safe_load((tmp_path / "two" / "config.yaml").read_text())["config"]["num_envs"] == 8


def test_ctrl_c_stops_every_process_at_one_step_and_the_resumed_run_logs_what_the_straight_one_does(tmp_path,
                                                                                                      capsys):
    # torchrun forwards the signal to both workers; they agree on the step, rank 0 saves every
    # rank's envs and random streams, and two processes continue exactly (one process: new episodes)
    args = ["train", "ppo", "--env", "CartPole-v1", "--steps", "8192", "--num-envs", "2", "--n-steps", "128",
            "--n-epochs", "2", "--batch-size", "128", "--eval-interval", "2048", "--log-interval", "256",
            "--norm-obs", "--norm-reward", "--seed", "3", "--eval-episodes", "3", "--video", "false",
            "--runs-dir", str(tmp_path)]
    straight = lab_command([*args, "--name", "straight"], 2)
    assert straight.returncode == 0, straight.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                             "-m", "lab", *args, "--name", "stopped"], env={**env, **ENV}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_step(proc, tmp_path / "stopped", 2048)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert err.count("SIGINT: finishing this step") == 2 and err.count("interrupted: ppo") == 1, err
    state = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "latest.pt")
    assert 0 < state["global_step"] < 8192 and state["world_size"] == 2 and len(state["ranks"]) == 2
    shutil.copytree(tmp_path / "stopped", tmp_path / "on-one")
    assert main(["resume", str(tmp_path / "on-one")]) == 0
    assert "this run has 1: the training envs start new episodes" in capsys.readouterr().err
    assert json.loads((tmp_path / "on-one" / "summary.json").read_text())["global_step"] == 8192
    resumed = lab_command(["resume", str(tmp_path / "stopped")], 2)
    assert resumed.returncode == 0, resumed.stderr
    assert "start new episodes" not in resumed.stderr and "written by 2 processes" not in resumed.stderr
    rows = [[{k: v for k, v in row.items() if k not in ("time", "perf/sps")}
             for row in read_jsonl(tmp_path / name / "metrics.jsonl")] for name in ("straight", "stopped")]
    assert any("eval/return_mean" in row for row in rows[0]) and any("train/episode_return" in row for row in rows[0])
    assert rows[1] == rows[0]


def test_an_algorithm_without_data_parallel_support_is_refused_in_one_line(tmp_path) -> None:
    result = lab_command(["train", "dqn", "--env", "CartPole-v1", "--runs-dir", str(tmp_path)], 2, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: dqn cannot train on several processes yet (it does not average its gradients "
                      "across them); run it without torchrun"]
    assert not any(tmp_path.iterdir())  # no run directory is left behind


# ------------------------------------------------------------ without torchrun


def test_one_process_joins_no_process_group(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() == (0, 1, 0)
    assert not torch.distributed.is_initialized()
    assert distributed.any_flag(True) and not distributed.any_flag(False)
    grad = torch.ones(3)
    assert distributed.all_reduce_mean(grad) is grad and distributed.broadcast_object(5) == 5
    with distributed.together():
        pass


def test_global_counts_must_split_evenly_over_the_processes(monkeypatch) -> None:
    monkeypatch.setattr(distributed, "_world", 2)
    assert distributed.split(8, "--num-envs") == 4
    with pytest.raises(LabError, match=r"--num-envs 3 does not split evenly over 2 processes .* pass a multiple of 2"):
        distributed.split(3, "--num-envs")


def test_merged_normaliser_statistics_are_one_process_statistics(monkeypatch) -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, generator=gen) * 5 + 100 for _ in range(6)]
    start = RunningMeanStd((3,), torch.device("cpu"))
    start.update(batches[0])
    snapshot = (start.mean, start.var, start.count)

    def rank(data: list[torch.Tensor]) -> RunningMeanStd:
        stats = RunningMeanStd((3,), torch.device("cpu"))
        stats.mean, stats.var, stats.count = snapshot
        for batch in data:
            stats.update(batch)
        return stats

    one, a, b = rank(batches[1:]), rank(batches[1:4]), rank(batches[4:])
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    sent = {}
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: sent.setdefault("b", t.clone()))
    merge_statistics(b, snapshot)  # records what rank b contributes to the all-reduce
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: t + sent["b"])
    merge_statistics(a, snapshot)
    for merged, expected in ((a.mean, one.mean), (a.var, one.var), (a.count, one.count)):
        assert torch.allclose(merged, expected, rtol=1e-9, atol=1e-9)
