"""The runner through the real CLI: run directory contract, checkpoints, resume, signals."""

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

from conftest import read_jsonl
from lab.cli import main
from lab.run.checkpoint import load_checkpoint


def runs_dir() -> Path:
    return Path(os.environ["LAB_RUNS_DIR"])


def test_train_writes_complete_run_directory(toy_plugins):
    assert main(["train", "toy", "--data", "toy-data", "--epochs", "3", "--name", "r1", "--seed", "5"]) == 0
    run = runs_dir() / "r1"
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["algo"] == "toy" and doc["seed"] == 5 and doc["preset"] == "toy-data"
    assert doc["config"]["batch_size"] == 4  # the preset applied
    assert doc["total_steps"] == 3 * (48 // 4)
    assert "torch" in doc["versions"] and "git_commit" in doc
    rows = read_jsonl(run / "metrics.jsonl")
    assert all(isinstance(r["global_step"], int) and "time" in r for r in rows)
    assert any("train/loss" in r for r in rows) and any("perf/sps" in r for r in rows)
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["global_step"] for r in evals] == [12, 24, 36]  # once per epoch
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 36
    assert summary["eval/accuracy"] == evals[-1]["eval/accuracy"]
    for name in ("latest.pt", "best.pt"):
        state = load_checkpoint(run / "checkpoints" / name)
        assert state["algo"] == "toy"
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"] == 36
    # atomic writes keep the mode any new file gets (mkstemp alone would leave them 0600)
    umask = os.umask(0)
    os.umask(umask)
    for path in ("config.yaml", "summary.json", "checkpoints/latest.pt", "checkpoints/best.pt"):
        assert (run / path).stat().st_mode & 0o777 == 0o666 & ~umask, path
    # the recording tracker (a plugin) saw the same rows, and the lifecycle hook fired
    recorded = read_jsonl(run / "recorded.jsonl")
    assert [r["metrics"] for r in recorded if r["call"] == "log"] == [
        {k: v for k, v in row.items() if k not in ("global_step", "time")} for row in rows]
    assert recorded[-1] == {"call": "finish", "status": "finished"}
    assert json.loads((run / "on_run_end.json").read_text()) == {"status": "finished"}


def test_resume_refuses_finished_run_without_more_steps(toy_plugins, capsys):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "10", "--name", "done"]) == 0
    assert main(["resume", str(runs_dir() / "done")]) == 2
    assert "already at step 10" in capsys.readouterr().err


def test_failed_run_is_marked_failed(toy_plugins):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "30", "--fail-at", "5", "--name", "bad"]) == 1
    summary = json.loads((runs_dir() / "bad" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["global_step"] == 5


def _start_and_interrupt(name: str, steps: int, sig: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "train", "toy", "--data", "toy-data", "--steps", str(steps),
         "--sleep", "0.005", "--name", name, "--log-interval", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = runs_dir() / name / "metrics.jsonl"
    deadline = time.time() + 600  # generous: a busy 2-core CI machine
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigint_checkpoints_and_resume_matches_uninterrupted_run(toy_plugins, capsys):
    steps = 400
    result = _start_and_interrupt("sig", steps, signal.SIGINT)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    run = runs_dir() / "sig"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped_at = load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"]
    assert 0 < stopped_at < steps and stopped_at == summary["global_step"]

    capsys.readouterr()
    assert main(["resume", str(run)]) == 0  # continues to the original budget (in this process)
    assert f"from step {stopped_at} to {steps}" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["global_step"] for r in rows] == sorted(r["global_step"] for r in rows)

    # model, optimizer, LR schedule and data-order RNG all survived: same weights as a straight run
    assert main(["train", "toy", "--data", "toy-data", "--steps", str(steps), "--name", "straight"]) == 0
    a = load_checkpoint(runs_dir() / "straight" / "checkpoints" / "latest.pt")["algorithm"]["model"]
    b = load_checkpoint(run / "checkpoints" / "latest.pt")["algorithm"]["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_sigterm_and_sighup_also_interrupt(toy_plugins, sig):
    result = _start_and_interrupt("term", 100000, sig)
    assert result.returncode == 128 + sig, result.stderr
    assert json.loads((runs_dir() / "term" / "summary.json").read_text())["status"] == "interrupted"
    assert (runs_dir() / "term" / "checkpoints" / "latest.pt").is_file()


def test_runs_table_and_compare(toy_plugins, tmp_path, capsys):
    for seed in (1, 2):
        assert main(["train", "toy", "--data", "toy-data", "--steps", "24", "--seed", str(seed),
                     "--name", f"lr-a-{seed}"]) == 0
    assert main(["train", "toy", "--data", "toy-data", "--steps", "24", "--learning-rate", "0.05",
                 "--name", "lr-b"]) == 0
    capsys.readouterr()
    assert main(["runs"]) == 0
    table = capsys.readouterr().out
    assert "lr-a-1" in table and "finished" in table and "eval/accuracy" in table
    summary = json.loads((runs_dir() / "lr-a-1" / "summary.json").read_text())
    row = next(line for line in table.splitlines() if "lr-a-1" in line)
    assert "last (best)" in table and f"eval/accuracy {summary['eval/accuracy']:.4g} ({summary['best']:.4g})" in row
    out = tmp_path / "cmp.png"
    assert main(["compare", *(str(runs_dir() / n) for n in ("lr-a-1", "lr-a-2", "lr-b")),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("| toy")]
    assert len(lines) == 2  # the two seeds form one experiment, lr 0.05 another
    assert any("| 2 |" in line for line in lines) and any("learning_rate=0.05" in line for line in lines)
    assert out.stat().st_size > 1000


def test_config_yaml_of_a_run_reproduces_it(toy_plugins):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "12", "--learning-rate", "0.03",
                 "--hidden", "8,8", "--name", "orig"]) == 0
    assert main(["train", "toy", "--config", str(runs_dir() / "orig" / "config.yaml"), "--name", "copy"]) == 0
    orig, copy = (yaml.safe_load((runs_dir() / n / "config.yaml").read_text()) for n in ("orig", "copy"))
    assert copy["config"] == orig["config"] and copy["config"]["hidden"] == [8, 8]
    assert copy["total_steps"] == 12 and copy["run"]["data"] == "toy-data"
    a = load_checkpoint(runs_dir() / "orig" / "checkpoints" / "latest.pt")["algorithm"]["model"]
    b = load_checkpoint(runs_dir() / "copy" / "checkpoints" / "latest.pt")["algorithm"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_progress_line_fits_80_columns_with_a_sane_eta():
    import io
    import re

    from rich.console import Console

    from lab.run.progress import RunProgress

    live = Console(file=io.StringIO(), force_terminal=True, width=200)
    progress = RunProgress("sb3-ppo-long-name", 10_000_000, 4_000_000, console=live)  # a resumed run
    progress.update(4_000_000)
    progress._window_time -= 1.0  # one second later, 1,000 steps on
    progress.update(4_001_000)
    progress.note(4_001_000, {"train/episode_return": 123456.789, "eval/return_mean": -98765.4321,
                              "train/loss": 0.000123456, "perf/sps": 1000.0}, "eval/return_mean")
    shown = Console(file=io.StringIO(), width=200, record=True)
    shown.print(progress._bar.make_tasks_table(progress._bar.tasks))
    progress.close()
    line = shown.export_text().rstrip("\n")
    assert "\n" not in line and len(line) <= 80, line
    assert "4M/10M" in line
    # 5,999,000 steps left at about 1,000 steps/s (not from the 4M the resumed run started at)
    hours, minutes, _ = map(int, re.search(r"ETA (\d+):(\d\d):(\d\d)", line).groups())
    assert 95 <= hours * 60 + minutes <= 105, line


def test_every_run_ends_with_a_report(toy_plugins, capsys):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "24", "--name", "rep"]) == 0
    err = capsys.readouterr().err.splitlines()
    report = err[-5:]
    assert report[0].startswith("finished: toy on toy-data at step 24")
    assert report[1].startswith("  eval/accuracy: final") and "best" in report[1]
    assert report[2].startswith("  last: train/loss")  # custom metrics reach the console
    assert report[3] == f"  run: {runs_dir() / 'rep'}"
    assert report[4] == f"  next: lab compare {runs_dir() / 'rep'}"


def test_lab_load_returns_a_trained_agent_ready_to_act():
    import lab

    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "1200", "--learning-starts", "500",
                 "--eval-episodes", "2", "--video", "false", "--name", "loaded"]) == 0
    agent = lab.load(runs_dir() / "loaded")
    try:
        assert agent.global_step == json.loads((runs_dir() / "loaded" / "summary.json").read_text())["best_step"]
        assert agent.buffer is None  # nothing only training needs
        actions = agent.act(torch.zeros(3, 4))
        assert actions.shape == (3,) and actions.dtype == torch.int64
        best = load_checkpoint(runs_dir() / "loaded" / "checkpoints" / "best.pt")["algorithm"]["q"]
        assert all(torch.equal(v, agent.q.state_dict()[k]) for k, v in best.items())
    finally:
        agent.close()


def test_torch_floor_admits_what_the_code_uses():
    """dqn builds fused Adam on the CPU, which needs torch >= 2.4."""
    import re

    import tomllib

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(re.match(r"torch>=(\d+)\.(\d+)", d) for d in deps if d.startswith("torch"))
    assert (int(floor[1]), int(floor[2])) >= (2, 4)


def test_a_run_that_diverges_stops_keeps_its_last_finite_checkpoint_and_resumes_from_it(toy_plugins, capsys):
    code = main(["train", "toy", "--data", "toy-data", "--steps", "60", "--nan-at", "25", "--log-interval", "5",
                 "--eval-interval", "10", "--learning-rate", "0.3", "--name", "div"])
    err = capsys.readouterr().err
    assert code == 1, err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "diverged at step" in line and "learning rate (0.3) is likely too high" in line, line
    assert "(step 20)" in line and "lab resume" in line, line
    run = runs_dir() / "div"
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    for name in ("latest", "best"):
        state = load_checkpoint(run / "checkpoints" / f"{name}.pt")
        assert state["global_step"] <= 20
        assert all(torch.isfinite(v).all() for v in state["algorithm"]["model"].values()), name
    rows = read_jsonl(run / "metrics.jsonl")
    assert any(r.get("train/loss", 0.0) is None for r in rows), "the non-finite loss is logged (null in JSON)"
    assert "train/loss nan" in err, "the report shows the NaN"
    code = main(["resume", str(run)])
    assert "from step 20 to 60" in capsys.readouterr().err and code == 1  # the same settings diverge again


def test_lab_runs_tells_a_killed_run_from_a_live_one(toy_plugins, capsys):
    proc = subprocess.Popen([sys.executable, "-m", "lab", "train", "toy", "--data", "toy-data", "--steps", "100000",
                             "--sleep", "0.01", "--checkpoint-interval", "20", "--name", "victim"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = runs_dir() / "victim" / "checkpoints" / "latest.pt"
    deadline = time.time() + 120
    while not latest.is_file():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    assert main(["runs"]) == 0
    assert "running (pid" in capsys.readouterr().out
    proc.kill()
    proc.wait()
    assert main(["runs"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "victim" in line)
    step = load_checkpoint(latest)["global_step"]
    assert f"killed (at step {step:,}" in row and f"{step}" in row, row


@pytest.mark.parametrize("algo, flags", [("ppo", ["--n-steps", "64"]), ("dqn", ["--learning-starts", "100"])])
def test_a_learning_rate_that_diverges_is_noticed(algo, flags, capsys):
    code = main(["train", algo, "--env", "CartPole-v1", "--learning-rate", "1e30", "--steps", "4000",
                 "--log-interval", "200", "--name", algo, *flags])
    err = capsys.readouterr().err
    assert code == 1 and "error: diverged at step" in err and "is nan" in err, err
    run = runs_dir() / algo
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    best = run / "checkpoints" / "best.pt"
    assert not best.exists() or all(torch.isfinite(t).all() for t in load_checkpoint(best)["algorithm"]
                                    [("policy" if algo == "ppo" else "q")].values())


def test_a_second_ctrl_c_waits_until_a_tracker_call_has_returned():
    from lab.api import Tracker
    from lab.run.trackers import MultiTracker
    from lab.signals import StopRequest

    stop = StopRequest()
    stop.training = True
    stop.signum = signal.SIGINT  # the first Ctrl-C was noted
    done = []

    class Slow(Tracker):
        def log(self, metrics, step):
            stop._handle(signal.SIGINT, None)  # the second Ctrl-C lands inside the tracker's own call
            done.append(step)

    tracker = MultiTracker([Slow(), Slow()], guard=stop.critical)
    with pytest.raises(KeyboardInterrupt):
        tracker.log({"x": 1.0}, 7)
    assert done == [7, 7], "both trackers finished the call before the stop took effect"


def test_a_cpu_run_gives_up_threads_to_the_processes_beside_it(monkeypatch):
    """Two threads while the cores are free, one while another process holds a core, back to two."""
    from lab.device import SharedCores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    clock = {"t": 0.0}
    monkeypatch.setattr(time, "monotonic", lambda: clock["t"])
    readings = iter([(0.0, 0.0, 0.0),  # (busy core-seconds, own CPU seconds, wall seconds)
                     (2.0, 2.0, 1.0),  # idle beside us: we used both cores
                     (4.0, 3.0, 2.0),  # another process took a core
                     (5.9, 3.9, 3.0),  # still there
                     (7.9, 5.9, 4.0)])  # gone
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cores = SharedCores(2, every_s=1.0, read=lambda: next(readings))
        seen = []
        for _ in range(4):
            clock["t"] += 1.0
            seen.append((cores.adjust(), torch.get_num_threads()))
            assert cores.adjust() == seen[-1][0], "checked at most once per interval"
    finally:
        torch.set_num_threads(before)
    assert seen == [(2, 2), (1, 1), (1, 1), (2, 2)]


def test_cpu_times_come_from_the_kernel_where_it_has_them():
    from lab.device import read_cpu_times

    first = read_cpu_times()
    if first is None:
        pytest.skip("no /proc here: the threads stay as the algorithm chose")
    sum(i * i for i in range(300_000))
    second = read_cpu_times()
    assert second[1] > first[1] and second[0] >= first[0] and second[2] > first[2]
