"""The W&B tracker against real offline runs, read back from the `.wandb` files they wrote.

wandb-core closes a run's file asynchronously after `run.finish()` returns; `wandb.teardown()`
waits for the service to exit, so every test that reads a file tears down first (the next
run then starts the service again, about 0.2 s on 2 CPU cores).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import wandb

from lab.api import LabError, RunInfo
from lab.plugins import wandb_tracker
from lab.plugins.wandb_tracker import EXIT_CODES, WandbOptions, WandbTracker, make_tracker
from lab.plugins.wandb_tracker.records import (
    WandbFileError,
    drop_history_after,
    find_wandb_file,
    find_wandb_files,
    is_synced,
    read_config,
    read_history,
    read_payloads,
    read_records,
    read_run,
    read_summary,
    synced_history,
    write_records,
)

REPO = Path(__file__).resolve().parents[1]
W_AND_B_FIELDS = ("_step", "_runtime", "_timestamp")


@pytest.fixture(autouse=True)
def wandb_sandbox(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep W&B's settings, cache and artifact staging out of the home directory."""
    home = tmp_path_factory.mktemp("wandb-home")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    yield
    wandb.teardown()


def make_info(run_dir: Path, wandb_mode: str = "offline", wandb_artifacts: bool = False, **overrides) -> RunInfo:
    """A RunInfo as the runner makes it; the W&B settings are the tracker's own options."""
    fields = dict(
        name=run_dir.name,
        run_dir=run_dir,
        algo="random",
        kind="agent",
        env="CartPole-v1",
        data=None,
        seed=3,
        experiment="random-CartPole-v1",
        config={"algo": "random", "env": "CartPole-v1", "seed": 3, "optim": {"lr": 2.5e-4}},
        tracker_options={"wandb": WandbOptions(wandb=wandb_mode, project="arcade-lab-tests",
                                               wandb_artifacts=wandb_artifacts)},
    )
    fields.update(overrides)
    return RunInfo(**fields)


def scalar_rows(path: Path) -> list[dict]:
    """History rows without W&B's bookkeeping fields or media-only rows."""
    rows = [{k: v for k, v in row.items() if k not in W_AND_B_FIELDS} for row in read_history(path)]
    return [row for row in rows if not any(isinstance(v, dict) for v in row.values())]


def write_png(path: Path) -> Path:
    import cv2
    import numpy as np

    image = np.zeros((8, 8, 3), np.uint8)
    image[2:6, 2:6] = (0, 255, 0)
    assert cv2.imwrite(str(path), image)
    return path


def write_mp4(path: Path, frames: int = 6) -> Path:
    import imageio_ffmpeg
    import numpy as np

    writer = imageio_ffmpeg.write_frames(str(path), (16, 16), fps=4, macro_block_size=1)
    writer.send(None)
    for i in range(frames):
        writer.send(np.full((16, 16, 3), 40 * i, np.uint8).tobytes())
    writer.close()
    return path


def test_offline_run_reads_back_history_config_identity_and_media(tmp_path: Path) -> None:
    run_dir = tmp_path / "random-CartPole-v1-s3"
    info = make_info(run_dir)
    tracker = make_tracker(info)
    assert isinstance(tracker, WandbTracker)

    logged = [
        {"train/episode_return": 10.0 + i, "train/episode_length": 10 + i, "perf/sps": 123.5 * i}
        for i in range(5)
    ]
    for i, metrics in enumerate(logged):
        tracker.log(metrics, step=100 * (i + 1))
    media = run_dir / "media"
    media.mkdir()
    tracker.log_image("samples", write_png(media / "samples.png"), step=500)
    tracker.log_video("eval/video", write_mp4(media / "episode.mp4"), step=500)
    tracker.finish({"status": "finished", "eval/return_mean": 14.0})
    wandb.teardown()

    path = find_wandb_file(run_dir)
    assert path.is_relative_to(run_dir / "wandb")
    assert scalar_rows(path) == [{"global_step": 100 * (i + 1), **m} for i, m in enumerate(logged)]

    media_rows = [row for row in read_history(path) if "samples" in row or "eval/video" in row]
    assert [row["global_step"] for row in media_rows] == [500, 500]
    image, video = media_rows[0]["samples"], media_rows[1]["eval/video"]
    assert image["_type"] == "image-file" and (image["width"], image["height"]) == (8, 8)
    assert video["_type"] == "video-file" and video["path"].endswith(".mp4")
    files = path.parent / "files"
    assert (files / image["path"]).read_bytes() == (media / "samples.png").read_bytes()
    assert (files / video["path"]).read_bytes() == (media / "episode.mp4").read_bytes()

    config = read_config(path)
    assert {k: v for k, v in config.items() if k != "_wandb"} == info.config
    run = read_run(path)
    assert run["run_id"] == run_dir.name
    assert run["project"] == "arcade-lab-tests"
    assert run["group"] == "random-CartPole-v1"
    assert run["job_type"] == "agent"
    assert run["tags"] == ["random", "CartPole-v1"]
    assert run["exit_code"] == 0
    summary = read_summary(path)
    assert summary["status"] == "finished"
    assert summary["eval/return_mean"] == 14.0
    assert summary["global_step"] == 500


def test_every_metric_is_plotted_against_global_step(tmp_path: Path) -> None:
    tracker = make_tracker(make_info(tmp_path / "run"))
    tracker.log({"train/loss": 0.5}, step=1)
    tracker.finish({"status": "finished"})
    wandb.teardown()
    metrics = [r.metric for r in read_records(find_wandb_file(tmp_path / "run")) if r.HasField("metric")]
    assert any(m.glob_name == "*" and m.step_metric == "global_step" for m in metrics)


def test_disabled_returns_none_and_writes_nothing(tmp_path: Path) -> None:
    assert make_tracker(make_info(tmp_path / "run", wandb_mode="disabled")) is None
    assert not (tmp_path / "run").exists()


def test_unknown_mode_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=re.escape("online | offline | disabled")):
        make_tracker(make_info(tmp_path / "run", wandb_mode="offlien"))


def test_invalid_wandb_mode_env_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "")  # wandb itself fails with a pydantic error here
    with pytest.raises(LabError, match="WANDB_MODE=''"):
        make_tracker(make_info(tmp_path / "run"))


def test_registered_through_the_public_hook() -> None:
    registered: dict[str, object] = {}
    wandb_tracker.register_trackers(lambda name, factory, **_: registered.setdefault(name, factory))
    assert registered == {"wandb": make_tracker}


def test_api_key_is_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "f0e1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    wandb.teardown()  # the service process reads the environment when it starts
    run_dir = tmp_path / "run"
    tracker = make_tracker(make_info(run_dir))
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.finish({"status": "finished"})
    wandb.teardown()

    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "debug.log" for p in files)
    leaks = [p for p in files if secret.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.parametrize("status, code", [("failed", 1), ("diverged", 1), ("interrupted", 255), ("pruned", 0)])
def test_exit_code_says_how_the_run_ended(tmp_path: Path, status: str, code: int) -> None:
    """As the process exits: a pruned sweep trial ended as asked, a diverged run failed."""
    tracker = make_tracker(make_info(tmp_path / "run"))
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.finish({"status": status})
    tracker.finish({"status": "finished"})  # a second call is ignored
    wandb.teardown()
    path = find_wandb_file(tmp_path / "run")
    assert read_run(path)["exit_code"] == code
    assert read_summary(path)["status"] == status


def test_resume_continues_the_same_run_id(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = make_tracker(make_info(run_dir))
    first.log({"train/loss": 1.0}, step=10)
    first.finish({"status": "interrupted"})
    second = make_tracker(make_info(run_dir, resumed=True))
    second.log({"train/loss": 0.5}, step=20)
    second.finish({"status": "finished"})
    wandb.teardown()

    files = find_wandb_files(run_dir)
    assert len(files) == 2  # W&B keeps one offline folder per session of the run
    assert [read_run(p)["run_id"] for p in files] == ["run", "run"]
    assert [scalar_rows(p) for p in files] == [
        [{"global_step": 10, "train/loss": 1.0}],
        [{"global_step": 20, "train/loss": 0.5}],
    ]
    # the resumed session numbers its rows after the first one's, so a sync keeps both
    assert [row["_step"] for p in files for row in read_history(p)] == [0, 1]
    assert [row["global_step"] for row in synced_history(run_dir)] == [10, 20]


def test_sync_drops_a_resumed_offline_session_that_restarts_step(tmp_path: Path) -> None:
    """Why the tracker numbers rows itself: plain `run.log` in an offline session that
    resumes a run starts `_step` at 0 again, below the rows the run holds, and a sync drops
    every row of it (W&B's rule, as `synced_history` applies it)."""
    run_dir = tmp_path / "run"
    for resumed, steps in ((False, (1, 2, 3)), (True, (4, 5))):
        run = wandb.init(project="arcade-lab-tests", id="run", dir=str(run_dir), mode="offline",
                         resume="allow" if resumed else None, reinit="create_new",
                         settings=wandb_tracker.wandb_settings())
        for step in steps:
            run.log({"global_step": step})
        run.finish()
    wandb.teardown()
    files = find_wandb_files(run_dir)
    assert [[row["_step"] for row in read_history(p)] for p in files] == [[0, 1, 2], [0, 1]]
    assert [row["global_step"] for row in synced_history(run_dir)] == [1, 2, 3]


def test_resumed_session_logs_again_the_rows_a_killed_session_lost(tmp_path: Path) -> None:
    """A session killed with kill -9 loses the rows wandb-core had not written to disk (a
    short one, all of them: its file is the bare header); metrics.jsonl has them, and the
    next session logs them first (here: rows 3 and 4)."""
    run_dir = tmp_path / "run"
    rows = [{"global_step": 10 * i, "time": 0.1 * i, "train/loss": 1.0 / i, "eval/return_mean": 5.0 * i}
            for i in range(1, 5)]
    first = make_tracker(make_info(run_dir))
    for row in rows[:2]:
        first.log({k: v for k, v in row.items() if k not in ("global_step", "time")}, row["global_step"])
    first.finish({"status": "interrupted"})
    wandb.teardown()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    killed = run_dir / "wandb" / "offline-run-20000101_000000-run" / "run-run.wandb"
    killed.parent.mkdir()
    killed.write_bytes(b":W&B\xe1\xbe\x00")  # wandb-core killed before its first record

    second = make_tracker(make_info(run_dir, resumed=True))  # from the checkpoint at step 40
    second.log({"train/loss": 0.1, "eval/return_mean": 1.0}, step=50)
    second.finish({"status": "finished"})
    wandb.teardown()

    assert is_synced(killed)  # `wandb sync` would stop at a file without a run record
    synced = [comparable(r) for r in synced_history(run_dir)]
    expected = [comparable(r) for r in rows] + [{"global_step": 50, "train/loss": 0.1, "eval/return_mean": 1.0}]
    assert synced == expected
    summary = read_summary(find_wandb_file(run_dir))
    assert summary["eval/return_mean"] == {"min": 1.0, "max": 20.0, "last": 1.0}  # over both sessions


def test_rewritten_file_keeps_wandb_cores_format_and_the_other_records(tmp_path: Path) -> None:
    tracker = make_tracker(make_info(tmp_path / "run", config={"blob": "x" * 50_000}))
    for step in range(1, 201):
        tracker.log({"v": step * 0.5}, step=step)
    tracker.finish({"status": "finished"})
    wandb.teardown()
    path = find_wandb_file(tmp_path / "run")
    original = path.read_bytes()
    payloads = list(read_payloads(path))

    write_records(path, payloads)
    assert path.read_bytes() == original  # byte for byte what wandb-core wrote
    assert drop_history_after(path, 500) == 0 and path.read_bytes() == original
    assert drop_history_after(path, 150) == 50
    assert [row["global_step"] for row in read_history(path)] == list(range(1, 151))
    gone = [p for p in payloads if p not in set(read_payloads(path))]
    assert len(gone) == 50 and all(r.WhichOneof("record_type") == "history" for r in map(parse, gone))
    assert list(read_payloads(path)) == [p for p in payloads if p not in gone]  # the rest as it was
    assert read_config(path)["blob"] == "x" * 50_000 and read_run(path)["exit_code"] == 0


def parse(payload: bytes):
    from wandb.proto.wandb_internal_pb2 import Record

    record = Record()
    record.ParseFromString(payload)
    return record


def test_artifacts_only_on_request(tmp_path: Path) -> None:
    ckpt = tmp_path / "latest.pt"
    ckpt.write_bytes(b"not really a checkpoint")

    def artifacts_logged(run_dir: Path, requested: bool) -> list:
        tracker = make_tracker(make_info(run_dir, wandb_artifacts=requested))
        tracker.log_artifact(ckpt, f"{run_dir.name}-checkpoint", "model")
        tracker.finish({"status": "finished"})
        wandb.teardown()
        return [r.artifact for r in read_records(find_wandb_file(run_dir)) if r.HasField("artifact")]

    assert artifacts_logged(tmp_path / "plain", requested=False) == []
    (artifact,) = artifacts_logged(tmp_path / "with", requested=True)
    assert (artifact.name, artifact.type) == ("with-checkpoint", "model")
    assert "latest" in artifact.aliases
    assert [entry.path for entry in artifact.manifest.contents] == ["latest.pt"]


def test_reader_reassembles_records_spanning_blocks_and_detects_corruption(tmp_path: Path) -> None:
    big = "x" * 100_000  # a config record of ~100 KB spans four 32 KiB blocks
    tracker = make_tracker(make_info(tmp_path / "run", config={"blob": big}))
    for step in range(1, 301):  # small rows crossing further block boundaries
        tracker.log({"v": step * 0.5}, step=step)
    tracker.finish({"status": "finished"})
    wandb.teardown()
    path = find_wandb_file(tmp_path / "run")
    assert path.stat().st_size > 4 * 32768
    assert read_config(path)["blob"] == big
    assert [row["v"] for row in scalar_rows(path)] == [s * 0.5 for s in range(1, 301)]

    data = bytearray(path.read_bytes())
    truncated = tmp_path / "truncated.wandb"
    truncated.write_bytes(data[: len(data) - 5000])
    rows = scalar_rows(truncated)  # a run killed mid-write still reads up to the cut
    assert 0 < len(rows) < 300 and rows == scalar_rows(path)[: len(rows)]

    data[40_000] ^= 0xFF
    corrupt = tmp_path / "corrupt.wandb"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(WandbFileError, match="checksum"):
        list(read_records(corrupt))
    (tmp_path / "other.wandb").write_bytes(b"not a wandb file")
    with pytest.raises(WandbFileError, match=r"not a \.wandb file"):
        list(read_records(tmp_path / "other.wandb"))


def test_run_closes_cleanly_after_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group (wandb-core runs in a session of
    its own). The tracker is driven as the runner drives it: the signal is noted and the loop
    stops between calls (a second Ctrl-C, too, only takes effect once a tracker call has
    returned: `MultiTracker`'s guard), so no KeyboardInterrupt lands inside W&B's client."""
    run_dir = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_wandb_tracker import make_info
        from lab.plugins.wandb_tracker import make_tracker
        from lab.signals import STOP
        from lab.run.trackers import MultiTracker
        STOP.install()
        STOP.training = True
        tracker = MultiTracker([make_tracker(make_info(Path({str(run_dir)!r})))], guard=STOP.critical)
        for step in range(1, 10_000):
            if STOP.requested:
                break
            tracker.log({{"train/loss": 1.0 / step}}, step=step)
            if step == 3:
                print("ready", flush=True)
            time.sleep(0.01)
        tracker.finish({{"status": "interrupted"}})
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=600)  # generous: a busy 2-core CI machine
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("SIGINT: ")]
    # W&B stays quiet on the console: only the lab's sync hint
    assert len(lines) == 1 and lines[0].startswith("W&B is offline: upload later with `wandb sync --id run "), stderr

    path = find_wandb_file(run_dir)
    assert read_run(path)["exit_code"] == EXIT_CODES["interrupted"]
    assert read_summary(path)["status"] == "interrupted"
    rows = scalar_rows(path)
    assert len(rows) >= 3
    assert all(math.isclose(r["train/loss"], 1.0 / r["global_step"]) for r in rows)


# -- end to end through the runner: the W&B history is metrics.jsonl, row for row --------


def comparable(row: dict) -> dict:
    """A metrics row as both trackers can agree on it: no wall-clock fields, and non-finite
    floats as None (metrics.jsonl stores them as null to stay valid JSON)."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in row.items()
        if k != "time" and k not in W_AND_B_FIELDS
    }


def jsonl_rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [comparable(json.loads(line)) for line in lines if line.strip()]


def wandb_rows(run_dir: Path) -> list[dict]:
    return [comparable(row) for path in find_wandb_files(run_dir) for row in scalar_rows(path)]


def lab_main(*argv: str) -> int:
    from lab.cli import main

    return main(list(argv))


def only_run_dir(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.slow
def test_train_and_resume_history_matches_metrics_jsonl(tmp_path: Path, toy_plugins) -> None:
    runs = tmp_path / "runs"
    assert lab_main("train", "toy", "--data", "toy-data", "--steps", "24", "--log-interval", "4",
                    "--eval-interval", "12", "--wandb", "offline", "--wandb-artifacts", "true",
                    "--runs-dir", str(runs)) == 0
    run_dir = only_run_dir(runs)
    assert lab_main("resume", str(run_dir), "--steps", "36") == 0
    wandb.teardown()

    first, second = find_wandb_files(run_dir)
    assert jsonl_rows(run_dir) == wandb_rows(run_dir)
    assert [r["global_step"] for r in wandb_rows(run_dir)][-1] == 36
    assert {read_run(p)["run_id"] for p in (first, second)} == {run_dir.name}
    assert read_run(first)["job_type"] == "supervised" and read_run(first)["tags"] == ["toy", "toy-data"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert read_summary(second)["status"] == summary["status"] == "finished"
    assert read_summary(second)["global_step"] == 36
    artifacts = [r.artifact for r in read_records(first) if r.HasField("artifact")]
    assert artifacts and {a.name for a in artifacts} == {f"{run_dir.name}-checkpoint"}


@pytest.mark.slow
def test_random_cartpole_history_matches_metrics_jsonl(tmp_path: Path) -> None:
    """The acceptance run from the brief: `lab train random --env CartPole-v1 --steps 2000`."""
    from lab.run.discovery import load_lab

    if "random" not in load_lab().registry.algorithms:
        pytest.skip("the built-in `random` agent is not registered yet")
    runs = tmp_path / "runs"
    assert lab_main("train", "random", "--env", "CartPole-v1", "--steps", "2000",
                    "--wandb", "offline", "--video", "true", "--runs-dir", str(runs)) == 0
    wandb.teardown()
    run_dir = only_run_dir(runs)
    rows = jsonl_rows(run_dir)
    assert any("train/episode_return" in r for r in rows)
    assert rows == wandb_rows(run_dir)

    path = find_wandb_file(run_dir)
    videos = [v for row in read_history(path) for v in row.values()
              if isinstance(v, dict) and v.get("_type") == "video-file"]
    (mp4,) = list((run_dir / "media").glob("*.mp4"))
    assert len(videos) == 1
    assert (path.parent / "files" / videos[0]["path"]).read_bytes() == mp4.read_bytes()


# -- a run stopped twice, resumed twice and evaluated: one W&B run, every row once ------------

SLOW_RANDOM = """
import os
import signal
import time

from lab.api import hookimpl
from lab.plugins.random_agent import RandomAgent

CTRL_C_TWICE_AT = int(os.environ.get("SLOW_RANDOM_CTRL_C_TWICE_AT", "0"))


class SlowRandom(RandomAgent):
    \"\"\"The random agent at a few hundred steps a second, so a test can stop it mid-run;
    with SLOW_RANDOM_CTRL_C_TWICE_AT it presses Ctrl-C twice itself at that step (the second
    stops the run at once, without a checkpoint), which a test cannot time from outside.\"\"\"

    name = "slow-random"

    def train_step(self):
        time.sleep(0.003)
        metrics = super().train_step()
        if CTRL_C_TWICE_AT and self.global_step >= CTRL_C_TWICE_AT:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before os.kill returns
            os.kill(os.getpid(), signal.SIGINT)
        return metrics


@hookimpl
def register_algorithms(register):
    register(SlowRandom)
"""


def start_lab(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`lab ...` in its own process group (wandb-core included), as a terminal starts it."""
    return subprocess.Popen([sys.executable, "-m", "lab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def wait_for_row(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 300) -> None:
    """Until metrics.jsonl has a complete row at `step` or later (generous: busy CI machines)."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while True:
        lines = metrics.read_text().splitlines()[:-1] if metrics.exists() else []
        if lines and json.loads(lines[-1])["global_step"] >= step:
            return
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()}"
        assert time.time() < deadline, f"no row at step {step} after {timeout} s"
        time.sleep(0.02)


def wait_for_group_exit(pgid: int, timeout: float = 120) -> None:
    """Until no process of the group is left (wandb-core outlives a killed lab process briefly)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {pgid} still running after {timeout} s")


def read_jsonl_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("second_stop", ["ctrl-c-twice", "kill-9"])
def test_run_interrupted_and_resumed_twice_syncs_to_one_complete_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second_stop: str
) -> None:
    """Ctrl-C at ~step 250 (a checkpoint there), resume, stopped again at ~step 450 with no
    checkpoint since step 400 (rows 401..450 logged past it), resume to 600, `lab eval`.

    ctrl-c-twice: the run closes its W&B session, whose file keeps the rows past the
    checkpoint. kill-9: wandb-core dies without writing what it held (its file may keep
    nothing at all), while metrics.jsonl has every row. Either way, the history a sync of
    the run's four offline files leaves is metrics.jsonl, each row once and in step order,
    then the evaluation; and the sync drops no row.
    """
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow_random.py").write_text(SLOW_RANDOM)
    monkeypatch.setenv("LAB_PLUGINS_DIR", str(plugins))
    run_dir = tmp_path / "runs" / "r"

    first = start_lab("train", "slow-random", "--env", "CartPole-v1", "--steps", "600", "--log-interval", "50",
                      "--eval-interval", "200", "--eval-episodes", "2", "--video", "false", "--seed", "1",
                      "--wandb", "offline", "--name", "r", "--runs-dir", str(tmp_path / "runs"))
    wait_for_row(first, run_dir, 250)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the step finishes, a checkpoint is saved
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGINT, stderr
    stopped_at = json.loads((run_dir / "summary.json").read_text())["global_step"]
    assert 250 <= stopped_at < 400

    if second_stop == "ctrl-c-twice":
        second = start_lab("resume", str(run_dir), env={"SLOW_RANDOM_CTRL_C_TWICE_AT": "450"})
        _, stderr = second.communicate(timeout=300)
        assert second.returncode == 128 + signal.SIGINT, stderr
        killed = find_wandb_files(run_dir)[1]
        assert max(row["global_step"] for row in read_history(killed)) > 400  # rows past the checkpoint
    else:
        second = start_lab("resume", str(run_dir))
        wait_for_row(second, run_dir, 450)
        os.kill(second.pid, signal.SIGKILL)
        second.communicate(timeout=300)
        wait_for_group_exit(second.pid)
        killed = find_wandb_files(run_dir)[1]
    assert max(r["global_step"] for r in read_jsonl_rows(run_dir)) > 400

    # the last resume and the evaluation run in this process (the stops above needed real processes)
    assert lab_main("resume", str(run_dir)) == 0
    wandb.teardown()
    assert lab_main("eval", str(run_dir), "--episodes", "2") == 0
    wandb.teardown()

    files = find_wandb_files(run_dir)
    assert len(files) == 4 and files[1] == killed  # train, resume, resume, eval: a folder each ...
    assert {read_run(p)["run_id"] for p in files if not is_synced(p)} == {"r"}  # ... one W&B run
    every = [row for p in files for row in read_history(p)]
    synced = synced_history(run_dir)
    assert synced == every  # the sync drops nothing: `_step` rises across the sessions
    assert all(row["global_step"] <= 400 for row in read_history(killed))  # rows past the checkpoint: cut

    jsonl = jsonl_rows(run_dir)
    result = json.loads((run_dir / "eval.json").read_text())
    eval_metrics = {k: v for k, v in result.items() if k not in ("checkpoint", "global_step", "episodes", "media")}
    assert result["global_step"] == 600
    assert [comparable(row) for row in synced] == [*jsonl, {"global_step": 600, **eval_metrics}]
    # metrics.jsonl itself holds each step once, in order (the runner cut rows past the checkpoint)
    steps = [row["global_step"] for row in jsonl]
    assert steps == sorted(steps) and steps[-1] == 600
    assert [row["global_step"] for row in jsonl if "perf/sps" in row] == list(range(50, 601, 50))
    assert sum("train/episode_return" in row for row in jsonl) > 10

    summary = read_summary(files[-1])  # the eval session's, the last a sync applies
    returns = [row["eval/return_mean"] for row in jsonl if "eval/return_mean" in row] + [eval_metrics["eval/return_mean"]]
    assert summary["eval/return_mean"] == {"min": min(returns), "max": max(returns), "last": returns[-1]}
    episodes = [row["train/episode_return"] for row in jsonl if "train/episode_return" in row]
    assert (summary["train/episode_return"]["min"], summary["train/episode_return"]["max"]) == (min(episodes), max(episodes))
    assert summary["global_step"] == 600 and summary["status"] == "finished"


def test_the_workspace_command_lays_out_the_lab_and_offline_writes_its_spec(tmp_path, monkeypatch, capsys) -> None:
    from lab.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "ws.json"
    assert main(["wandb-workspace", "--project", "mine", "--out", str(out)]) == 0
    assert "needs `wandb login`" in capsys.readouterr().err
    view = json.loads(out.read_text())
    assert view["project"] == "mine"
    section = view["spec"]["section"]
    sections = {s["name"]: s for s in section["panelBankConfig"]["sections"]}
    assert list(sections) == ["Evaluation", "Training", "Speed", "Sweeps"]
    curves = [p for name in ("Evaluation", "Training", "Speed") for p in sections[name]["panels"]]
    assert {p["viewType"] for p in curves} == {"Run History Line Plot"}
    assert all(p["config"]["xAxis"] == "global_step" for p in curves), "every curve against global_step"
    assert all(p["config"]["groupAgg"] == "mean" and p["config"]["groupArea"] == "stderr" for p in curves)
    metrics = {m for p in curves for m in p["config"]["metrics"]}
    assert {"eval/return_mean", "train/episode_return", "perf/sps"} <= metrics
    assert [p["viewType"] for p in sections["Sweeps"]["panels"]] == ["Parallel Coordinates Plot", "Parameter Importance"]
    columns = [c["accessor"] for c in sections["Sweeps"]["panels"][0]["config"]["columns"]]
    # a run's W&B config is its config.yaml: the algorithm's settings sit under `config`
    assert "config:config.value.learning_rate" in columns and columns[-1] == "summary:eval/return_mean"
    runset = section["runSets"][0]
    assert "summary:best" in runset["runFeed"]["columnPinned"] and "config:seed" in runset["runFeed"]["columnPinned"]
    assert json.dumps(runset["grouping"]).count("group") >= 1, "runs grouped by their W&B group (an experiment)"
