"""Exact runs: a run stopped by SIGINT and resumed logs what the same run left alone logs;
evaluation never changes training; the runner owns random streams, locks and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import lab as lab_module
from conftest import LOCAL_PLUGINS, comparable, one_line_error, read_jsonl, runs_dir
from conftest import lab as lab_cli
from lab.api import LabError, Tracker
from lab.cli import main
from lab.rl.evaluation import evaluate_policy, evaluation_seed
from lab.run.checkpoint import load_checkpoint
from lab.run.context import RunContext
from lab.run.discovery import load_lab
from lab.seeding import RNGStreams
from lab.signals import StopRequest


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    """Wait until the run has logged a row at `step` or later (generous: CI machines are busy)."""
    metrics = run / "metrics.jsonl"
    deadline = time.time() + timeout
    while True:
        if metrics.exists():
            rows = [json.loads(line) for line in metrics.read_text().splitlines()[:-1] if line.strip()]
            if rows and rows[-1]["global_step"] >= step:
                return
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()}"
        assert time.time() < deadline, f"no row at step {step} after {timeout} s"
        time.sleep(0.05)


EXACT_CASES = {
    "dqn": ["--env", "CartPole-v1", "--steps", "6000", "--learning-starts", "1000", "--eval-interval", "1500",
            "--log-interval", "256"],
    # noisy nets, C51, PER and n-step: every random draw from a saved stream
    "rainbow": ["--env", "CartPole-v1", "--steps", "3000", "--learning-starts", "500", "--eval-interval", "1000",
                "--log-interval", "128", "--net-arch", "32,32", "--batch-size", "64"],
    "sb3-dqn": ["--env", "CartPole-v1", "--steps", "5120", "--learning-starts", "1000", "--eval-interval", "1280",
                "--log-interval", "256"],
    "sb3-ppo": ["--env", "CartPole-v1", "--steps", "8192", "--num-envs", "2", "--n-steps", "128",
                "--n-epochs", "2", "--batch-size", "128", "--eval-interval", "2048", "--log-interval", "256"],
    "ppo": ["--env", "CartPole-v1", "--steps", "8192", "--num-envs", "2", "--n-steps", "128", "--n-epochs", "2",
            "--batch-size", "128", "--eval-interval", "2048", "--log-interval", "256", "--norm-obs", "--norm-reward"],
    "a2c": ["--env", "Pendulum-v1", "--steps", "16000", "--num-envs", "4", "--eval-interval", "4000",
            "--log-interval", "1000", "--norm-obs", "--norm-reward"],
    "sac": ["--env", "Pendulum-v1", "--steps", "1500", "--learning-starts", "300", "--eval-interval", "500",
            "--log-interval", "100", "--net-arch", "32,32", "--batch-size", "64"],
    "td3": ["--env", "Pendulum-v1", "--steps", "1500", "--learning-starts", "300", "--eval-interval", "500",
            "--log-interval", "100", "--net-arch", "32,32", "--batch-size", "64"],
    "sb3-sac": ["--env", "Pendulum-v1", "--steps", "1200", "--learning-starts", "300", "--eval-interval", "400",
                "--log-interval", "100", "--net-arch", "32,32", "--batch-size", "64"],
    "sb3-td3": ["--env", "Pendulum-v1", "--steps", "1200", "--learning-starts", "300", "--eval-interval", "400",
                "--log-interval", "100", "--net-arch", "32,32", "--batch-size", "64"],
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(EXACT_CASES))
def test_sigint_then_resume_logs_what_the_uninterrupted_run_logs(algo, capsys):
    common = ["train", algo, *EXACT_CASES[algo], "--seed", "3", "--eval-episodes", "3", "--video", "false"]
    assert main([*common, "--name", "straight"]) == 0
    steps = int(EXACT_CASES[algo][EXACT_CASES[algo].index("--steps") + 1])

    proc = start(*common, "--name", "stopped")  # a real process gets a real SIGINT
    wait_for_step(proc, runs_dir() / "stopped", steps // 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert f"lab resume {runs_dir() / 'stopped'}" in err  # the report says what to type next
    stopped_at = load_checkpoint(runs_dir() / "stopped" / "checkpoints" / "latest.pt")["global_step"]
    assert 0 < stopped_at < steps

    # resumed in this process: everything it continues from crossed the process boundary in the run folder
    capsys.readouterr()
    code, resumed_err = lab_cli(capsys, "resume", str(runs_dir() / "stopped"))
    assert code == 0, resumed_err
    assert "start new episodes" not in resumed_err  # classic control continues its episodes
    straight = read_jsonl(runs_dir() / "straight" / "metrics.jsonl")
    again = read_jsonl(runs_dir() / "stopped" / "metrics.jsonl")
    assert any(k in r for r in again for k in ("train/loss", "train/critic_loss"))
    assert any("eval/return_mean" in r for r in again)
    assert comparable(again) == comparable(straight)
    summaries = [json.loads((runs_dir() / n / "summary.json").read_text()) for n in ("straight", "stopped")]
    assert summaries[0]["best"] == summaries[1]["best"] and summaries[1]["status"] == "finished"


def test_evaluation_never_changes_training():
    """Evaluating more often (and with exploration at evaluation) leaves the learning identical."""
    common = ["train", "dqn", "--env", "CartPole-v1", "--steps", "3000", "--learning-starts", "500",
              "--eval-episodes", "2", "--video", "false", "--eval-exploration-eps", "0.3", "--log-interval", "100"]
    assert main([*common, "--eval-interval", "300", "--name", "often"]) == 0
    assert main([*common, "--eval-interval", "3000", "--name", "rarely"]) == 0
    weights = [load_checkpoint(runs_dir() / n / "checkpoints" / "latest.pt")["algorithm"]["q"]
               for n in ("often", "rarely")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    losses = [[r["train/loss"] for r in read_jsonl(runs_dir() / n / "metrics.jsonl") if "train/loss" in r]
              for n in ("often", "rarely")]
    assert losses[0] == losses[1] and losses[0]


def test_lab_eval_replays_the_evaluation_logged_at_that_step():
    """Evaluation seeds derive from (run seed, global_step): `lab eval` of best.pt plays the
    very episodes the in-training evaluation at best_step played."""
    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "2000", "--learning-starts", "500",
                 "--eval-interval", "500", "--eval-episodes", "3", "--eval-exploration-eps", "0.2",
                 "--video", "false", "--name", "ev"]) == 0
    run = runs_dir() / "ev"
    summary = json.loads((run / "summary.json").read_text())
    logged = {r["global_step"]: r["eval/return_mean"] for r in read_jsonl(run / "metrics.jsonl")
              if "eval/return_mean" in r}
    assert main(["eval", str(run), "--checkpoint", "best", "--episodes", "3"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["global_step"] == summary["best_step"]
    assert result["eval/return_mean"] == logged[summary["best_step"]] == summary["best"]


def test_each_evaluation_plays_new_episodes(tmp_path):
    ctx = RunContext(device=torch.device("cpu"), seed=0, total_steps=100, run_dir=tmp_path,
                  registry=load_lab().registry, tracker=Tracker(), env_id="CartPole-v1")

    def returns(step: int) -> list[float]:
        with ctx.rng.evaluation(step):
            gen = ctx.rng.eval_generator()
            policy = lambda obs: torch.randint(0, 2, (len(obs),), generator=gen)  # noqa: E731
            return evaluate_policy(ctx, policy, 6, evaluation_seed(ctx, step))["eval/return_mean"]

    assert returns(100) == returns(100)  # a function of the step...
    assert returns(100) != returns(200)  # ...so `best` is not the maximum over the same episodes replayed


def test_streams_are_named_saved_and_untouched_by_evaluation():
    rng = RNGStreams(seed=5, device=torch.device("cpu"))
    replay, actions = rng.generator("replay"), rng.generator("actions")
    assert rng.generator("replay") is replay and not torch.equal(replay.get_state(), actions.get_state())
    torch.rand(3, generator=replay)
    saved = rng.state_dict()
    expected = torch.rand(4, generator=replay)  # what training draws next
    replay.set_state(saved["streams"]["replay"])
    with rng.evaluation(step=10):
        torch.rand(100, generator=replay)  # even a plugin that misuses a training stream...
        torch.rand(100)
    assert torch.equal(torch.rand(4, generator=replay), expected)  # ...leaves training's draws alone
    fresh = RNGStreams(seed=5, device=torch.device("cpu"))
    fresh.load_state_dict(saved)  # restored before the stream is even asked for
    assert torch.equal(torch.rand(4, generator=fresh.generator("replay")), expected)


def test_evaluation_restores_streams_and_global_state():
    rng = RNGStreams(seed=1, device=torch.device("cpu"))
    gen = rng.generator("actions")
    before_stream, before_global = gen.get_state(), torch.get_rng_state()
    with rng.evaluation(step=3):
        torch.rand(10, generator=gen), torch.rand(10)
    assert torch.equal(gen.get_state(), before_stream) and torch.equal(torch.get_rng_state(), before_global)


def test_second_signal_waits_for_a_critical_section():
    stop = StopRequest().install()
    try:
        stop.training = True
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            with stop.critical():
                os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the checkpoint is written
                finished = True  # the write completes...
        assert finished  # ...and only then does the run stop
        with stop.critical(then_stop=False):  # the run's own ending absorbs it
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.uninstall()


def test_double_ctrl_c_while_saving_leaves_an_intact_interrupted_run():
    proc = start("train", "dqn", "--env", "CartPole-v1", "--steps", "200000", "--learning-starts", "1000",
                 "--buffer-size", "200000", "--name", "twice", "--log-interval", "500", "--video", "false",
                 "--checkpoint-interval", "1000")
    wait_for_step(proc, runs_dir() / "twice", 3000)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err
    summary = json.loads((runs_dir() / "twice" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert load_checkpoint(runs_dir() / "twice" / "checkpoints" / "latest.pt")["global_step"] > 0


LEAVING = """
import sys
from lab.signals import STOP
STOP.install()
garbage = [{"n": [i] * 4} for i in range(1_000_000)]  # freed while the interpreter shuts down
STOP.exit_on_signal(130)
print("leaving", flush=True)
sys.exit(130)
"""


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03])
def test_ctrl_c_while_the_interpreter_shuts_down_keeps_the_exit_code(delay):
    # Python puts its own handlers back to the default during shutdown: a handler written in
    # Python cannot catch this Ctrl-C, and the process used to die of SIGINT (-2).
    proc = subprocess.Popen([sys.executable, "-c", LEAVING], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout.readline() == "leaving\n"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130


def wait_for_handler(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until `lab` has installed its signal handlers (it catches SIGTERM; Python alone does not).

    Before that the interpreter itself is still starting, and no program can help what a
    signal does there.
    """
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)
    raise AssertionError("lab never installed its signal handlers")


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0, 2.5])
def test_ctrl_c_during_set_up_exits_cleanly(delay):
    proc = start("train", "dqn", "--env", "CartPole-v1", "--steps", "100000", "--name", "early",
                 "--video", "false")
    wait_for_handler(proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Error" not in err, err
    run = runs_dir() / "early"
    if run.exists():  # the signal came after set-up: an interrupted run to resume
        assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    else:
        assert "no run was started" in err


def test_a_run_in_use_is_locked_and_a_stale_lock_is_taken_over(capsys):
    proc = start("train", "dqn", "--env", "CartPole-v1", "--steps", "500000", "--learning-starts", "1000",
                 "--name", "busy", "--checkpoint-interval", "2000", "--log-interval", "500", "--video", "false")
    run = runs_dir() / "busy"
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / "latest.pt").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        code, err = lab_cli(capsys, "resume", str(run))  # in this process: the lock is what keeps it out
        assert code == 2 and f"pid {proc.pid}" in err and "in use" in err
        assert lab_cli(capsys, "eval", str(run))[0] == 2
    finally:
        proc.kill()  # SIGKILL: no chance to clean up, the lock file stays behind
        proc.communicate()
    assert (run / ".lock").exists()
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"]
    code, err = lab_cli(capsys, "resume", str(run), "--steps", str(saved + 500))
    assert code == 0, err
    assert f"taking over the lock of pid {proc.pid}" in err
    assert not (run / ".lock").exists()


def test_resume_updates_the_budget_in_config_yaml(toy_plugins):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "12", "--name", "grow"]) == 0
    assert main(["resume", str(runs_dir() / "grow"), "--steps", "24"]) == 0
    doc = yaml.safe_load((runs_dir() / "grow" / "config.yaml").read_text())
    assert doc["total_steps"] == 24 and doc["run"]["steps"] == 24


def test_resume_from_best_checkpoint():
    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "2000", "--learning-starts", "500",
                 "--eval-interval", "500", "--eval-episodes", "2", "--video", "false", "--name", "back"]) == 0
    run = runs_dir() / "back"
    best_step = json.loads((run / "summary.json").read_text())["best_step"]
    assert main(["resume", str(run), "--checkpoint", "best", "--steps", "2500"]) == 0
    rows = read_jsonl(run / "metrics.jsonl")
    assert rows[-1]["global_step"] == 2500
    steps = [r["global_step"] for r in rows]
    assert steps == sorted(steps) and best_step in steps


def test_resume_without_replay_buffer_waits_for_learning_starts():
    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "1500", "--num-envs", "1", "--learning-starts",
                 "1000", "--train-freq", "4", "--gradient-steps", "1", "--batch-size", "32", "--log-interval", "100",
                 "--checkpoint-replay-buffer", "false", "--video", "false", "--name", "refill"]) == 0
    assert main(["resume", str(runs_dir() / "refill"), "--steps", "3000"]) == 0
    after = [r["global_step"] for r in read_jsonl(runs_dir() / "refill" / "metrics.jsonl")
             if "train/loss" in r and r["global_step"] > 1500]
    assert after and min(after) > 1500 + 1000 - 100  # no learning from a handful of transitions


def test_atari_resume_restarts_games_from_a_seed_of_the_step(capsys):
    """ale-py's vector env cannot save its emulators: a resumed Breakout run starts new games
    seeded from (seed, global_step), says so, and otherwise continues exactly."""
    args = ["train", "dqn", "--env", "BreakoutNoFrameskip-v4", "--steps", "400", "--num-envs", "2",
            "--learning-starts", "300", "--buffer-size", "2000", "--batch-size", "4", "--eval-episodes", "1",
            "--eval-interval", "400", "--video", "false", "--name", "ale"]
    assert main(args) == 0
    capsys.readouterr()
    code, err = lab_cli(capsys, "resume", str(runs_dir() / "ale"), "--steps", "480")
    assert code == 0, err
    assert "start new episodes" in err and "seeded from the run seed and this step" in err


def test_a_run_folder_never_loads_code_but_says_which_plugin_folder_to_pass(capsys, tmp_path):
    assert main(["--plugins-dir", str(LOCAL_PLUGINS), "train", "toy", "--data", "toy-data", "--steps", "12",
                 "--name", "local"]) == 0
    capsys.readouterr()
    run = runs_dir() / "local"
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins_dir"] == str(LOCAL_PLUGINS.resolve())
    # a shared run folder whose config.yaml names a folder with code in it: nothing of it runs
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "evil.py").write_text("import pathlib\npathlib.Path('pwned').write_text('ran')\n")
    doc = yaml.safe_load((run / "config.yaml").read_text())
    doc["plugins_dir"] = str(planted)
    (run / "config.yaml").write_text(yaml.safe_dump(doc))
    for argv in (["resume", str(run), "--steps", "24"], ["eval", str(run)]):
        line = one_line_error(capsys, argv, f"pass --plugins-dir {planted}", "never loaded from a run folder")
        assert "'toy'" in line
    with pytest.raises(LabError, match="never loaded from a run folder"):
        lab_module.load(run)
    assert not Path("pwned").exists(), "no code of the folder the run names was run"
    code, err = lab_cli(capsys, "--plugins-dir", str(LOCAL_PLUGINS), "resume", str(run), "--steps", "24")
    assert code == 0, err
    assert lab_module.load(run, "latest", plugins_dir=str(LOCAL_PLUGINS)).global_step == 24


def test_missing_plugin_folders_and_names_get_a_warning(capsys, monkeypatch):
    monkeypatch.setenv("LAB_LOAD_PLUGINS", "toy,nosuch")
    code, err = lab_cli(capsys, "--plugins-dir", str(LOCAL_PLUGINS), "plugins", "--json")
    assert code == 0 and "warning: LAB_LOAD_PLUGINS names nosuch, which no installed package" in err
    code, err = lab_cli(capsys, "--plugins-dir", "/no/such/folder", "plugins", "--json")
    assert code == 0 and "warning: --plugins-dir '/no/such/folder' is not a folder" in err
