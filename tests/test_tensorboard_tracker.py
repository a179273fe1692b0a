"""The TensorBoard tracker and `--trackers`: event files read back with TensorBoard's own
EventAccumulator must hold what metrics.jsonl holds, step for step, also across a resume."""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conftest import one_line_error, read_jsonl, runs_dir
from lab.api import LabError, RunInfo
from lab.cli import main
from lab.plugins.tensorboard_tracker import LOG_DIR, make_tracker
from lab.run.checkpoint import load_checkpoint
from lab.run.discovery import load_lab
from lab.run.run_config import RunConfig
from lab.run.settings import resolve

try:
    import torch.utils.tensorboard  # noqa: F401  (what the tracker imports)
    from tensorboard.backend.event_processing import event_accumulator
except ImportError:
    event_accumulator = None

needs_tensorboard = pytest.mark.skipif(
    event_accumulator is None,
    reason='tensorboard is not installed (pip install -e ".[tensorboard]"); the tracker stays off without it',
)
JSONL_ONLY = ("global_step", "time")


def load_events(run: Path):
    """Every event in the run's tensorboard/ folder, purges applied as TensorBoard applies them."""
    acc = event_accumulator.EventAccumulator(
        str(run / LOG_DIR),
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0},
    )
    return acc.Reload()


def tb_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    acc = load_events(run)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in read_jsonl(run / "metrics.jsonl"):
        for key, value in row.items():
            if key not in JSONL_ONLY:
                out[key].append((row["global_step"], math.nan if value is None else float(value)))
    return dict(out)


def assert_same_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard holds exactly metrics.jsonl's rows: same tags, steps, order, float32 values."""
    tb, rows = tb_scalars(run), jsonl_scalars(run)
    assert sorted(tb) == sorted(rows)
    for tag, expected in rows.items():
        got = tb[tag]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        for (_, a), (_, b) in zip(got, expected, strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-6), (tag, a, b)
    return tb


def make_info(run_dir: Path, **overrides) -> RunInfo:
    fields = dict(name=run_dir.name, run_dir=run_dir, algo="toy", kind="supervised", env=None,
                  data="toy-data", seed=1, experiment="toy-toy-data", config={"algo": "toy", "seed": 1})
    fields.update(overrides)
    return RunInfo(**fields)


# ------------------------------------------------------------------ scalars, config, images


@needs_tensorboard
def test_scalars_match_metrics_jsonl_row_for_row():
    assert main(["train", "random", "--env", "CartPole-v1", "--steps", "300", "--name", "r"]) == 0
    run = runs_dir() / "r"
    tb = assert_same_scalars(run)
    assert {"train/episode_return", "eval/return_mean", "perf/sps"} <= set(tb)
    acc = load_events(run)
    assert "config/text_summary" in acc.Tags()["tensors"]  # the resolved config, as text
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "CartPole-v1" in text and "total_steps: 300" in text
    assert not acc.Tags()["images"]  # random writes an MP4 only: videos are not logged


@needs_tensorboard
def test_an_image_from_media_lands_as_an_image(tmp_path):
    import cv2
    import numpy as np

    picture = np.zeros((6, 10, 3), np.uint8)
    picture[:, :5] = (255, 0, 0)  # BGR: the left half is blue
    png = tmp_path / "media" / "grid.png"
    png.parent.mkdir()
    cv2.imwrite(str(png), picture)
    run_dir = tmp_path / "runs" / "direct"
    tracker = make_tracker(make_info(run_dir))
    assert tracker is not None
    tracker.log_image("media/samples", png, 7)
    tracker.log_image("media/broken", tmp_path / "missing.png", 7)  # skipped with a warning
    tracker.log_video("media/episode", tmp_path / "episode.mp4", 7)  # videos: nothing
    tracker.finish({"status": "finished"})
    tracker.finish({"status": "finished"})  # a second finish is harmless

    acc = load_events(run_dir)
    assert acc.Tags()["images"] == ["media/samples"]
    (event,) = acc.Images("media/samples")
    assert (event.step, event.width, event.height) == (7, 10, 6)
    decoded = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded, picture)  # same pixels, colours not swapped


@needs_tensorboard
def test_a_generator_run_logs_its_sample_grids(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    folder = tmp_path / "loose"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(60):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (16, 16), dtype=np.uint8))
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    assert main(["train", "vae", "--data", f"image-folder:{folder}", "--image-size", "16", "--validation-size",
                 "20", "--hidden", "8", "--latent-dim", "2", "--batch-size", "32", "--iw-samples", "4",
                 "--iw-images", "4", "--steps", "2", "--name", "v"]) == 0
    run = runs_dir() / "v"
    assert_same_scalars(run)
    pngs = sorted((run / "media").glob("samples-step*.png"))
    assert pngs
    events = load_events(run).Images("media/samples")
    assert [e.step for e in events] == [int(p.stem.rsplit("step", 1)[1]) for p in pngs]


# ------------------------------------------------------------------ --trackers


@needs_tensorboard
def test_trackers_jsonl_writes_no_tensorboard_folder(toy_plugins):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "12", "--trackers", "jsonl", "--name", "j"]) == 0
    run = runs_dir() / "j"
    assert (run / "metrics.jsonl").is_file() and read_jsonl(run / "metrics.jsonl")
    assert not (run / LOG_DIR).exists()
    assert not (run / "recorded.jsonl").exists()  # the toy plugin's tracker was not named either


@needs_tensorboard
def test_jsonl_always_runs_and_wandb_only_when_named(toy_plugins, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # wandb would start, were it selected
    assert main(["train", "toy", "--data", "toy-data", "--steps", "12", "--trackers", "tensorboard,recording",
                 "--name", "t"]) == 0
    run = runs_dir() / "t"
    assert read_jsonl(run / "metrics.jsonl")  # jsonl left out, still written
    assert (run / "recorded.jsonl").is_file()
    assert not (run / "wandb").exists()
    assert_same_scalars(run)


def test_default_trackers_still_honour_wandb_disabled(toy_plugins):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "12", "--wandb", "disabled", "--name", "d"]) == 0
    run = runs_dir() / "d"
    assert (run / "recorded.jsonl").is_file()  # every registered tracker by default
    assert not (run / "wandb").exists()
    assert (run / LOG_DIR).is_dir() == (event_accumulator is not None)  # on by default when installed


def test_unknown_tracker_is_one_line_and_no_run_directory(toy_plugins, capsys):
    line = one_line_error(capsys, ["train", "toy", "--data", "toy-data", "--steps", "12", "--trackers", "nosuch",
                                   "--name", "x"], "unknown tracker 'nosuch'", "jsonl", "wandb", "recording")
    assert "tensorboard" in line
    assert not runs_dir().exists() or not list(runs_dir().iterdir())


@dataclass
class _NoSettings:
    pass


class Algo:
    """Just enough of an algorithm class for `resolve`."""

    name = "a"
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    Config = _NoSettings


def test_trackers_flag_parses_a_comma_list():
    assert RunConfig().trackers is None
    assert RunConfig(trackers=(" jsonl", "tensorboard ", "jsonl")).trackers == ("jsonl", "tensorboard")
    assert RunConfig(trackers="wandb,jsonl").trackers == ("wandb", "jsonl")
    with pytest.raises(ValueError, match="--trackers has an empty name"):
        RunConfig(trackers=("jsonl", " "))

    registry = load_lab().registry
    assert resolve(Algo, {"trackers": "jsonl, tensorboard"}, None, registry).run.trackers == ("jsonl", "tensorboard")
    assert resolve(Algo, {"trackers": ["wandb"]}, None, registry).run.trackers == ("wandb",)  # a YAML list
    assert resolve(Algo, {"trackers": ""}, None, registry).run.trackers == ()  # only jsonl
    assert resolve(Algo, {"trackers": "none"}, None, registry).run.trackers == ()  # only jsonl, not the default
    assert resolve(Algo, {"trackers": None}, None, registry).run.trackers is None  # YAML's null: the default
    with pytest.raises(LabError, match="--trackers has an empty name"):
        resolve(Algo, {"trackers": ["jsonl", ""]}, None, registry)


def test_without_tensorboard_the_tracker_stays_off_unless_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now fails
    assert make_tracker(make_info(tmp_path / "a")) is None
    with pytest.raises(LabError, match=r'pip install -e "\.\[tensorboard\]"'):
        make_tracker(make_info(tmp_path / "b", trackers=("tensorboard",)))
    assert make_tracker(make_info(tmp_path / "c", trackers=("tensorboard",), resumed=True)) is None  # warns
    assert not (tmp_path / "a").exists()


def test_lab_eval_adds_nothing(tmp_path):
    assert make_tracker(make_info(tmp_path / "e", purpose="eval")) is None


# ------------------------------------------------------------------ resume


@needs_tensorboard
def test_a_rewound_resume_shows_each_step_once(toy_plugins):
    """A process that logged past its last checkpoint (crashed, or resumed from best.pt):
    TensorBoard drops those rows, as metrics.jsonl does."""
    common = ["--log-interval", "1", "--eval-interval", "5"]
    assert main(["train", "toy", "--data", "toy-data", "--steps", "20", *common, "--name", "w"]) == 0
    run = runs_dir() / "w"
    at_20 = run.parent / "latest-at-20.pt"
    shutil.copy(run / "checkpoints" / "latest.pt", at_20)
    assert main(["resume", str(run), "--steps", "40"]) == 0
    assert max(s for s, _ in tb_scalars(run)["train/loss"]) == 40
    shutil.copy(at_20, run / "checkpoints" / "latest.pt")  # as if steps 21..40 were logged, then a crash
    assert main(["resume", str(run), "--steps", "60"]) == 0

    assert len(list((run / LOG_DIR).glob("events.out.tfevents.*"))) == 3
    tb = assert_same_scalars(run)
    assert [s for s, _ in tb["train/loss"]] == list(range(1, 61))
    assert [s for s, _ in tb["eval/accuracy"]] == list(range(5, 61, 5))


@needs_tensorboard
def test_sigint_then_resume_shows_each_step_once(toy_plugins):
    proc = subprocess.Popen([sys.executable, "-m", "lab", "train", "toy", "--data", "toy-data", "--steps", "150",
                             "--sleep", "0.01", "--log-interval", "1", "--name", "s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = runs_dir() / "s"
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) > 10):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run logged nothing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped_at = load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"]
    assert 0 < stopped_at < 150

    assert main(["resume", str(run)]) == 0
    tb = assert_same_scalars(run)
    assert [s for s, _ in tb["train/loss"]] == list(range(1, 151))
