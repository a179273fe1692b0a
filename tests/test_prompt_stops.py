"""Bounded work on any input, prompt stops (issue 32): a budget a setting inflates is refused
before any work, a buffer that cannot fit is refused before it is allocated, and a stop
signal is honoured within seconds wherever the loop is (inside a rollout, an evaluation),
ending `interrupted` with a checkpoint `lab resume` continues from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import comparable, one_line_error, read_jsonl, runs_dir
from lab import distributed as lab_distributed
from lab import signals as lab_signals
from lab.api import LabError, StopRequested
from lab.buffers import ReplayBuffer, RolloutBuffer
from lab.cli import main
from lab.memory import allocating, size_text
from lab.plugins.ppo import PPO
from lab.run.checkpoint import load_checkpoint
from lab.run.context import STOP_CHECK_EVERY, RunContext
from lab.run.entry import round_budget
from lab.signals import GRACE_S, STOP

# ------------------------------------------------------------------ budgets


def test_a_budget_the_step_multiple_inflates_is_refused_in_one_line_before_any_run_folder(capsys) -> None:
    line = one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "100000", "--steps", "2048"],
                          "--steps 2048 would be rounded up to 3,200,000 steps", "--n-steps 32 and --num-envs 100000",
                          "lower --n-steps or --num-envs", "--steps 3200000")
    assert "1,562x" in line
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_the_preset_budget_is_named_when_it_is_the_one_inflated(capsys) -> None:
    one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "100000"],
                   "the preset's budget of 100,000 steps would be rounded up to 3,200,000 steps")


def test_rounding_up_to_twice_the_budget_is_allowed_with_a_note(capsys) -> None:
    config = PPO.Config(n_steps=32, num_envs=8)  # 256 steps a rollout
    assert round_budget(PPO, config, 128) == 256  # 2x: at least half a rollout asked for
    assert "--steps 128 rounded up to 256" in capsys.readouterr().err
    with pytest.raises(LabError, match=r"--steps 127 would be rounded up to 256 steps \(2x\)"):
        round_budget(PPO, config, 127)


# ------------------------------------------------------------------ memory


def test_a_rollout_that_cannot_fit_is_refused_in_one_line_with_the_estimate_and_the_limit(capsys) -> None:
    # 1e12 steps of CartPole: 4 float32 of observation, an int64 action, 5 float32 and 3 flags a transition
    line = one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "1",
                                   "--n-steps", "1000000000000", "--steps", "1000000000000"],
                          "a rollout of 1,000,000,000,000 steps x 1 envs needs 47 TB of CPU memory",
                          "can be used (80% of the", "free)", "lower --n-steps or --num-envs")
    assert not runs_dir().exists() or not any(runs_dir().iterdir())  # nothing of the run is left
    assert line


def test_a_replay_that_cannot_fit_is_refused_in_one_line_with_the_estimate_and_the_limit(capsys) -> None:
    one_line_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--buffer-size", "1000000000000"],
                   "a replay of 1,000,000,000,000 transitions needs", "TB of CPU memory", "can be used",
                   "lower --buffer-size")
    with pytest.raises(LabError, match=r"needs 40 TB of CPU memory, but .* can be used \(80% of the .* free\)"):
        ReplayBuffer(10**12, (4,), 1, "cpu", observation_dtype=torch.float32)


def test_stable_baselines3s_own_buffers_are_estimated_too(capsys) -> None:
    one_line_error(capsys, ["train", "sb3-ppo", "--env", "CartPole-v1", "--num-envs", "1", "--n-steps", "1000000000000",
                            "--steps", "1000000000000"],
                   "a rollout of 1,000,000,000,000 steps x 1 envs needs 44 TB of CPU memory", "lower --n-steps")


def test_an_allocation_that_fails_anyway_is_one_line_too(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] . DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 128000000000 bytes.")

    monkeypatch.setattr(torch, "zeros", refuse)
    with pytest.raises(LabError) as caught:
        RolloutBuffer(1000, 2, (4,), (), "cpu")
    assert "a rollout of 1,000 steps x 2 envs needs" in str(caught.value)
    assert "could not be allocated" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(RuntimeError, match="something else"), allocating("x", 1, "cpu", "fix"):
        raise RuntimeError("something else")  # only a failed allocation is reworded
    assert size_text(1.28e11) == "128 GB" and size_text(1536) == "1.54 KB"


# ------------------------------------------------------------------ stops inside a step or an evaluation

SMALL_PPO = ["--env", "CartPole-v1", "--steps", "2048", "--num-envs", "2", "--n-steps", "128", "--n-epochs", "1",
             "--batch-size", "128", "--eval-interval", "512", "--log-interval", "256", "--eval-episodes", "2",
             "--video", "false", "--trackers", "jsonl"]


CHECK_STOP = RunContext.check_stop


def stop_at_check(monkeypatch, when) -> list[str]:
    """A SIGINT that has waited out its grace at the check where `when(ctx, phase)` is true; phase
    counts the checks inside steps ("step", n) and inside each evaluation ("eval", k, n)."""
    seen = {"step": 0, "eval": 0, "in_eval": 0, "last": "step"}
    fired: list[str] = []

    def check(self) -> None:
        if self.in_step:
            seen["step"] += 1
            phase = ("step", seen["step"])
        else:
            if seen["last"] == "step":
                seen["eval"], seen["in_eval"] = seen["eval"] + 1, 0
            seen["in_eval"] += 1
            phase = ("eval", seen["eval"], seen["in_eval"])
        seen["last"] = phase[0]
        if not fired and when(phase):
            STOP.signum, STOP.since = signal.SIGINT, time.monotonic() - GRACE_S  # as if sent GRACE_S ago
            fired.append(str(phase))
        CHECK_STOP(self)

    monkeypatch.setattr(RunContext, "check_stop", check)
    return fired


def rows_of(run: Path) -> list[dict]:
    return comparable(read_jsonl(run / "metrics.jsonl"))


def test_a_stop_inside_a_rollout_ends_at_the_last_checkpoint_and_the_resumed_run_logs_what_the_straight_one_does(
        monkeypatch, capsys) -> None:
    assert main(["train", "ppo", *SMALL_PPO, "--name", "straight"]) == 0
    # rollouts of 128 checks: the 450th is inside the 4th rollout (steps 768 -> 1024), after the row at 768
    fired = stop_at_check(monkeypatch, lambda phase: phase == ("step", 450))
    assert main(["train", "ppo", *SMALL_PPO, "--name", "stopped"]) == 130 and fired
    err = capsys.readouterr().err
    stopped = runs_dir() / "stopped"
    assert "the stop came inside the training step after step 768, so nothing of that step is saved" in err
    assert f"next: lab resume {stopped} (continues from step 512, the last checkpoint" in err
    assert json.loads((stopped / "summary.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(stopped / "checkpoints" / "latest.pt")["global_step"] == 512
    assert max(row["global_step"] for row in read_jsonl(stopped / "metrics.jsonl")) == 768
    monkeypatch.setattr(RunContext, "check_stop", CHECK_STOP)
    assert main(["resume", str(stopped)]) == 0
    assert f"resuming {stopped} from step 512 to 2048" in capsys.readouterr().err
    assert rows_of(stopped) == rows_of(runs_dir() / "straight")


def test_a_stop_inside_an_update_ends_it_at_the_next_minibatch(monkeypatch, capsys) -> None:
    """A large rollout's update is thousands of minibatches (--num-envs 64 --n-steps 4096: 40,960
    gradient steps, over a minute here): every minibatch checks, not only the rollout."""
    minibatches: list[int] = []
    update, minibatches_of = PPO.update, PPO.minibatches

    def counted_update(self):
        minibatches.append(0)
        return update(self)

    def counted(self, batch_size):
        for batch in minibatches_of(self, batch_size):
            minibatches[-1] += 1
            yield batch

    monkeypatch.setattr(PPO, "update", counted_update)
    monkeypatch.setattr(PPO, "minibatches", counted)
    fired = stop_at_check(monkeypatch, lambda phase: bool(minibatches))  # the first check of the first update
    assert main(["train", "ppo", *SMALL_PPO, "--n-epochs", "4", "--batch-size", "32", "--name", "stopped"]) == 130
    assert fired and minibatches == [0], minibatches  # 4 epochs x 8 minibatches were due; none was taken
    assert "the stop came inside the training step after step 0" in capsys.readouterr().err


@pytest.mark.parametrize("algo,settings", [
    ("sb3-ppo", ["--n-steps", "64", "--n-epochs", "4", "--batch-size", "8"]),  # 64 rollout checks, then 32 minibatches
    ("sb3-dqn", ["--learning-starts", "10", "--train-freq", "64", "--gradient-steps", "32", "--batch-size", "8"]),
])
def test_stable_baselines3s_updates_check_for_a_stop_at_every_minibatch(monkeypatch, capsys, algo, settings) -> None:
    fired = stop_at_check(monkeypatch, lambda phase: phase == ("step", 70))  # the 6th minibatch of the first update
    assert main(["train", algo, "--env", "CartPole-v1", "--num-envs", "1", "--steps", "256", "--eval-episodes", "1",
                 "--video", "false", "--trackers", "jsonl", "--name", "stopped", *settings]) == 130 and fired
    assert "the stop came inside the training step after step 0" in capsys.readouterr().err


@pytest.mark.parametrize("evaluation", [2, 4])  # at step 1024, and the last one (step 2048, the budget)
def test_a_stop_inside_an_evaluation_saves_its_step_and_the_resumed_run_redoes_the_evaluation(
        monkeypatch, capsys, evaluation) -> None:
    assert main(["train", "ppo", *SMALL_PPO, "--name", "straight"]) == 0
    straight = rows_of(runs_dir() / "straight")
    fired = stop_at_check(monkeypatch, lambda phase: phase == ("eval", evaluation, 3))
    assert main(["train", "ppo", *SMALL_PPO, "--name", "stopped"]) == 130 and fired
    stopped, step = runs_dir() / "stopped", 512 * evaluation
    err = capsys.readouterr().err
    assert f"next: lab resume {stopped} (continues from step {step:,})" in err and "inside the training step" not in err
    state = load_checkpoint(stopped / "checkpoints" / "latest.pt")
    assert state["global_step"] == step and state["runner"]["evaluation_due"] is True
    assert not any("eval/return_mean" in row and row["global_step"] == step for row in rows_of(stopped))
    monkeypatch.setattr(RunContext, "check_stop", CHECK_STOP)
    assert main(["resume", str(stopped)]) == 0
    assert f"resuming {stopped} from step {step} to 2048" in capsys.readouterr().err
    assert rows_of(stopped) == straight
    assert json.loads((stopped / "summary.json").read_text())["status"] == "finished"
    assert main(["resume", str(stopped)]) == 2  # done now: a resume at the budget is refused again


def test_under_torchrun_the_processes_agree_on_stopping_every_few_checks_inside_a_step(monkeypatch, tmp_path):
    ctx = RunContext(device=torch.device("cpu"), seed=0, total_steps=1, run_dir=tmp_path, registry=None,
                     tracker=None, rank=1, world_size=2)
    agreed: list[bool] = []
    others = iter([False, True])  # the other process: not overdue yet at the first agreement, then overdue
    monkeypatch.setattr(lab_distributed, "any_flag", lambda flag: agreed.append(flag) or flag or next(others))
    monkeypatch.setattr(STOP, "training", True)
    monkeypatch.setattr(STOP, "done", False)
    monkeypatch.setattr(STOP, "signum", None)
    for _ in range(40):
        ctx.check_stop()  # no signal: not even a collective
    monkeypatch.setattr(STOP, "signum", signal.SIGTERM)
    monkeypatch.setattr(STOP, "since", time.monotonic())  # this process's grace has not run out
    for _ in range(40):
        ctx.check_stop()  # outside train_step (rank 0 evaluating alone): never a collective, never a stop
    ctx.in_step = True
    for _ in range(2 * STOP_CHECK_EVERY - 1):
        ctx.check_stop()
    assert agreed == [False], "one agreement every STOP_CHECK_EVERY checks, none in between"
    with pytest.raises(StopRequested, match="SIGTERM"):
        ctx.check_stop()  # the other process is overdue: both stop at this same check
    assert agreed == [False, False]


def test_a_generators_evaluation_over_a_dataset_checks_for_a_stop(monkeypatch, tmp_path) -> None:
    from tests.test_generators import SIZE, make_vae, write_loose

    vae = make_vae(tmp_path, write_loose(tmp_path / "loose"), hidden=(8,), latent_dim=2, batch_size=16,
                   validation_size=10, image_size=SIZE)
    monkeypatch.setattr(STOP, "training", True)
    monkeypatch.setattr(STOP, "done", False)
    monkeypatch.setattr(STOP, "signum", signal.SIGINT)
    monkeypatch.setattr(STOP, "since", time.monotonic())
    assert "val/nelbo" in vae.evaluate(), "within the grace the evaluation runs to its end"
    monkeypatch.setattr(STOP, "since", time.monotonic() - GRACE_S)
    with pytest.raises(StopRequested):
        vae.evaluate()


# ------------------------------------------------------------------ a real signal to a real process

# one rollout of 200,000 x 4 CartPole steps (about half a minute): the whole budget is that one step
LONG_ROLLOUT = ["ppo", "--env", "CartPole-v1", "--num-envs", "4", "--n-steps", "200000", "--steps", "800000",
                "--eval-episodes", "1", "--video", "false", "--trackers", "jsonl", "--name", "long"]
# a first rollout of 256 steps, then an evaluation of 100,000 CartPole episodes (about half a minute)
LONG_EVALUATION = ["ppo", "--env", "CartPole-v1", "--num-envs", "4", "--n-steps", "64", "--steps", "1024",
                   "--eval-interval", "256", "--eval-episodes", "100000", "--video", "false", "--trackers", "jsonl",
                   "--name", "long"]


def signal_inside(args: list[str], sig: signal.Signals, ready) -> tuple[int, float, str]:
    """`lab train ARGS` in a process of its own, sent `sig` once `ready(run_dir)`: (exit code,
    seconds from the signal to the exit, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "lab", "train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not (any(line.startswith("run: ") for line in lines) and ready(runs_dir() / "long")):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    seconds = time.monotonic() - sent
    reader.join(timeout=10)
    return code, seconds, "".join(lines)


def resume_and_stop_it(monkeypatch, capsys, run: Path) -> str:
    """`lab resume RUN` in this process, stopped by a real SIGINT once it trains (without the
    grace, so the test does not wait out a long step): it continues, then ends interrupted."""
    monkeypatch.setattr(lab_signals, "GRACE_S", 0.0)

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while not STOP.training and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    assert main(["resume", str(run)]) == 130
    sender.join()
    return capsys.readouterr().err


@pytest.mark.slow  # a fresh process imports torch, waits out the 3 s grace and tears torch down: ~10 s
def test_sigint_inside_a_long_rollout_ends_the_process_within_seconds_and_resume_continues(monkeypatch, capsys):
    def rolling_out(run: Path) -> bool:  # the first checkpoint (step 0) is written just before the rollout starts
        return (run / "checkpoints" / "latest.pt").is_file() and time.sleep(0.5) is None

    code, seconds, err = signal_inside(LONG_ROLLOUT, signal.SIGINT, rolling_out)
    run = runs_dir() / "long"
    assert code == 130 and seconds < 10, (code, seconds, err)
    assert "the stop came inside the training step after step 0" in err and "Traceback" not in err, err
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"] == 0  # written as training began
    err = resume_and_stop_it(monkeypatch, capsys, run)
    assert f"resuming {run} from step 0 to 800000" in err and "the stop came inside the training step" in err, err


@pytest.mark.slow  # as above
def test_sigterm_inside_a_long_evaluation_ends_the_process_within_seconds_and_resume_redoes_it(monkeypatch, capsys):
    def evaluating(run: Path) -> bool:  # the row at step 256 is logged just before the evaluation starts
        rows = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
        return any('"train/loss"' in row for row in rows) and time.sleep(0.5) is None

    code, seconds, err = signal_inside(LONG_EVALUATION, signal.SIGTERM, evaluating)
    run = runs_dir() / "long"
    assert code == 143 and seconds < 10, (code, seconds, err)
    assert "Traceback" not in err and "inside the training step" not in err, err
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["global_step"] == 256 and state["runner"]["evaluation_due"] is True
    err = resume_and_stop_it(monkeypatch, capsys, run)
    assert f"resuming {run} from step 256 to 1024" in err, err
    state = load_checkpoint(run / "checkpoints" / "latest.pt")  # stopped again inside the evaluation it redid
    assert state["global_step"] == 256 and state["runner"]["evaluation_due"] is True
