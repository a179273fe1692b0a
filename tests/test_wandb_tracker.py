"""The W&B tracker against real offline runs, read back from the `.wandb` files they wrote.

wandb-core closes a run's file asynchronously after `run.finish()` returns; `wandb.teardown()`
waits for the service to exit, so every test that reads a file tears down first (the next
run then starts the service again, about 0.2 s on 2 CPU cores).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wandb

from lab.errors import LabError
from lab.run import RunInfo
from lab.wandb_records import (
    WandbFileError,
    find_wandb_file,
    find_wandb_files,
    read_config,
    read_history,
    read_records,
    read_run,
    read_summary,
)
from lab.plugins import wandb_tracker
from lab.plugins.wandb_tracker import EXIT_CODES, WandbTracker, make_tracker

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


def make_info(run_dir: Path, **overrides) -> RunInfo:
    fields = dict(
        name=run_dir.name,
        run_dir=run_dir,
        algo="random",
        kind="agent",
        env="CartPole-v1",
        data=None,
        seed=3,
        experiment="random-CartPole-v1",
        project="arcade-lab-tests",
        wandb_mode="offline",
        wandb_artifacts=False,
        config={"algo": "random", "env": "CartPole-v1", "seed": 3, "optim": {"lr": 2.5e-4}},
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
    with pytest.raises(LabError, match="online | offline | disabled"):
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


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_exit_code_says_how_the_run_ended(tmp_path: Path, status: str) -> None:
    tracker = make_tracker(make_info(tmp_path / "run"))
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.finish({"status": status})
    tracker.finish({"status": "finished"})  # a second call is ignored
    wandb.teardown()
    path = find_wandb_file(tmp_path / "run")
    assert read_run(path)["exit_code"] == EXIT_CODES[status] != 0
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
    with pytest.raises(WandbFileError, match="not a .wandb file"):
        list(read_records(tmp_path / "other.wandb"))


def test_run_closes_cleanly_after_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group, wandb-core included."""
    run_dir = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_wandb_tracker import make_info
        from lab.plugins.wandb_tracker import make_tracker
        tracker = make_tracker(make_info(Path({str(run_dir)!r})))
        try:
            for step in range(1, 10_000):
                tracker.log({{"train/loss": 1.0 / step}}, step=step)
                if step == 3:
                    print("ready", flush=True)
                time.sleep(0.01)
        except KeyboardInterrupt:
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
    assert stderr.strip() == "", stderr  # W&B stays quiet on the console

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
    from lab.discovery import load_lab

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
