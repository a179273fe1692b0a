"""Supervised baselines: schedule, models, a short training run, validation split, resume, media, feature extractor, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import read_jsonl, real_data_dir
from lab.api import LabError, Tracker
from lab.generative.reference import reference_classifier
from lab.plugins import datasets, supervised
from lab.run.context import RunContext
from lab.run.discovery import load_lab
from lab.run.entry import run_loader
from lab.run.registry import Registry


def blobs_folder(root: Path, per_class: int = 40) -> Path:
    """Three easy classes of 12x12 grayscale images: a horizontal bar, a vertical bar or a
    square, anywhere in the image (the CNN pools globally, so shape must carry the class)."""
    rng = np.random.default_rng(0)
    for label, (height, width) in enumerate([(2, 8), (8, 2), (4, 4)]):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (12, 12), dtype=np.uint8)
            top, left = rng.integers(0, 13 - height), rng.integers(0, 13 - width)
            image[top : top + height, left : left + width] = 255
            cv2.imwrite(str(folder / f"{i}.png"), image)
    return root


class NullTracker(Tracker):
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Tests look at return values, not at logs."""


def make_algo(name: str, tmp_path: Path, data: str, data_dir: Path, total_steps: int = 50, **config) -> supervised.Classifier:
    registry = Registry()
    for dataset in ("mnist", "image-folder"):
        registry.add_dataset("datasets", dataset, getattr(datasets, dataset.replace("-", "_")))
    ctx = RunContext(
        device=torch.device("cpu"), seed=3, total_steps=total_steps, run_dir=tmp_path / "run",
        registry=registry, tracker=NullTracker(), data=data, data_dir=data_dir,
    )
    cls = supervised.ALGORITHMS[name]
    return cls(cls.Config(**config), ctx)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    from lab.schedules import warmup_decay

    factors = [warmup_decay(1.0, 100, 0.1)(step) for step in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    assert factors[100] == 0.0 and factors[109] == 0.0


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_models_map_images_to_features_and_logits(name: str) -> None:
    cls = supervised.ALGORITHMS[name]
    model = cls.build_model(cls.Config(), (1, 28, 28), [str(i) for i in range(10)], [0.13], [0.31]).eval()
    assert model.classes == [str(i) for i in range(10)] and model.input_shape == (1, 28, 28)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert model(images).shape == (4, 10)
    assert torch.allclose(model(images), model(images.float() / 255), atol=1e-5), "uint8 and [0,1] inputs agree"
    assert model.features(images).ndim == 2


def test_short_training_run_learns_an_image_folder(tmp_path: Path) -> None:
    blobs_folder(tmp_path / "blobs")
    algo = make_algo("cnn", tmp_path, "image-folder:blobs", tmp_path, total_steps=40, batch_size=16,
                     eval_batch_size=7, validation_size=12, widths=(8, 16), augment=False, image_size=12)
    assert algo.steps_per_epoch == (108 - 12) // 16 and algo.classes == ["class0", "class1", "class2"]
    losses = [algo.train_step()["train/loss"] for _ in range(40)]
    assert algo.global_step == 40
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    metrics = algo.evaluate()
    assert metrics["eval/accuracy"] >= 0.9 and metrics["eval/loss"] < 1.0
    assert metrics["val/accuracy"] >= 0.9 and metrics["val/loss"] < 1.0
    media = algo.write_media(tmp_path / "media")
    assert set(media) == {"eval/confusion_matrix", "eval/misclassified"}
    assert all(path.is_file() and path.read_bytes()[:4] == b"\x89PNG" for path in media.values())


def test_best_checkpoint_is_chosen_on_validation_held_out_from_training(tmp_path: Path) -> None:
    blobs_folder(tmp_path / "blobs", per_class=10)  # 30 images: 27 train, 3 test
    algo = make_algo("logreg", tmp_path, "image-folder:blobs", tmp_path, batch_size=4, validation_size=6, image_size=12)
    data = algo.ctx.load_dataset(image_size=12)
    assert len(data.train_images) == 27 and supervised.Classifier.key_metric == "val/accuracy"
    assert algo.steps_per_epoch == (27 - 6) // 4
    train_rows, val_rows = supervised.split_validation(27, 6)
    assert sorted(train_rows.tolist() + val_rows.tolist()) == list(range(27))
    assert torch.equal(algo.val_data.images, data.train_images[val_rows])
    assert torch.equal(algo.val_data.labels, data.train_labels[val_rows])
    assert torch.equal(algo.train_data.images, data.train_images[train_rows])
    # the folder stores its classes in order: a fixed random choice still holds out more than one
    assert len(set(algo.val_data.labels.tolist())) > 1
    assert torch.equal(supervised.split_validation(27, 6)[1], val_rows)  # the same split every run
    batches = [algo.train_data.next() for _ in range(3 * algo.steps_per_epoch)]
    assert max(int(batch.indices.max()) for batch in batches) < 21
    trained = torch.cat([batch.images for batch in batches]).flatten(1)
    held_out = algo.val_data.images.flatten(1)
    assert not (trained[:, None] == held_out[None]).all(-1).any(), "no validation image in a training batch"

    metrics = algo.evaluate()
    assert set(metrics) == {"val/accuracy", "val/loss", "eval/accuracy", "eval/loss"}
    splits = {"val": (data.train_images[val_rows], data.train_labels[val_rows]),
              "eval": (data.test_images, data.test_labels)}
    with torch.no_grad():
        for prefix, (images, labels) in splits.items():
            logits = algo.model.eval()(images)
            accuracy = (logits.argmax(1) == labels).float().mean().item()
            assert metrics[f"{prefix}/accuracy"] == pytest.approx(accuracy)
            assert metrics[f"{prefix}/loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)

    with pytest.raises(LabError, match="--validation-size 27 must be smaller than the 27 training images"):
        make_algo("logreg", tmp_path, "image-folder:blobs", tmp_path, validation_size=27, image_size=12)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    blobs_folder(tmp_path / "blobs", per_class=20)
    settings = dict(total_steps=12, batch_size=8, validation_size=6, widths=(4,), augment=True, image_size=12)
    torch.manual_seed(0)
    straight = make_algo("cnn", tmp_path, "image-folder:blobs", tmp_path, **settings)
    torch.manual_seed(0)
    resumed = make_algo("cnn", tmp_path, "image-folder:blobs", tmp_path, **settings)
    for _ in range(5):
        straight.train_step()
        resumed.train_step()
    path = tmp_path / "state.pt"
    torch.save(resumed.state_dict(), path)
    torch.manual_seed(123)  # a fresh process: different init, same checkpoint; the runner restores the horizon
    fresh = make_algo("cnn", tmp_path, "image-folder:blobs", tmp_path, **settings)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.global_step = 5
    after_straight = [straight.train_step()["train/loss"] for _ in range(4)]
    after_resume = [fresh.train_step()["train/loss"] for _ in range(4)]
    assert after_resume == pytest.approx(after_straight, rel=1e-5), "same batches, same LR horizon, same weights"


def test_unlabelled_or_unpaired_data_is_rejected(tmp_path: Path) -> None:
    for name in ("trainA", "trainB", "testA", "testB"):
        (tmp_path / "pairs" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "pairs" / name / "x.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(LabError, match="needs a labelled dataset"):
        make_algo("logreg", tmp_path, "image-folder:pairs", tmp_path, image_size=8)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="batch-size"):
        supervised.CNNConfig(batch_size=0)
    with pytest.raises(ValueError, match="warmup"):
        supervised.MLPConfig(warmup=1.5)
    with pytest.raises(ValueError, match="validation-size"):
        supervised.LogRegConfig(validation_size=0)


def test_logreg_learns_mnist_in_a_few_steps(tmp_path: Path) -> None:
    algo = make_algo("logreg", tmp_path, "mnist", real_data_dir(), total_steps=60, learning_rate=0.1)
    assert algo.steps_per_epoch == (60000 - 5000) // 256 and algo.val_data.num_samples == 5000
    for _ in range(60):
        algo.train_step()
    assert algo.evaluate()["eval/accuracy"] > 0.8


@pytest.mark.slow
def test_cli_trains_resumes_and_serves_a_feature_extractor(tmp_path: Path, monkeypatch, capsys) -> None:
    from lab.cli import main

    data_dir = real_data_dir()
    monkeypatch.setenv("LAB_DATA_DIR", str(data_dir))
    common = ["--data", "mnist", "--name", "tiny", "--batch-size", "512", "--widths", "4,8"]
    assert main(["train", "cnn", *common, "--steps", "6", "--eval-interval", "3"]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "tiny"
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert any("train/loss" in row for row in rows)
    evals = [row for row in rows if "eval/accuracy" in row]
    assert [row["global_step"] for row in evals] == [3, 6]
    assert all("val/accuracy" in row for row in evals)
    assert (run_dir / "media" / "confusion_matrix-step000000006.png").is_file()
    assert (run_dir / "media" / "misclassified-step000000006.png").is_file()

    assert main(["resume", str(run_dir), "--steps", "9"]) == 0, capsys.readouterr().err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 9 and summary["status"] == "finished"
    assert summary["key_metric"] == "val/accuracy"
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["runner"]["horizon"] == 6, "the LR schedule keeps its first horizon (the runner keeps it)"

    data = datasets.mnist(data_dir)
    extractor, _ = reference_classifier(data, loading_context(tmp_path), str(run_dir))
    features, logits = extractor(data.test_images[:5])
    assert features.shape == (5, 8) and logits.shape == (5, 10)


def loading_context(run_dir: Path) -> RunContext:
    """A CPU run's context that loads other runs as the entry points' sessions do."""
    lab = load_lab()
    return RunContext(device=torch.device("cpu"), seed=0, total_steps=0, run_dir=run_dir, registry=lab.registry,
                      tracker=Tracker(), run_loader=run_loader(lab))


def test_a_classifier_run_serves_only_classifiers(tmp_path: Path, capsys) -> None:
    with pytest.raises(LabError, match=r"does not exist|not a run directory|no config\.yaml"):
        reference_classifier(datasets.mnist(real_data_dir()), loading_context(tmp_path), str(tmp_path))


def test_a_cnn_whose_learning_rate_diverges_stops_with_finite_checkpoints(tmp_path: Path, capsys) -> None:
    """BatchNorm's running statistics go infinite too: they are weights the check covers."""
    from lab.cli import main
    from lab.run.checkpoint import load_checkpoint

    blobs_folder(tmp_path / "blobs")
    code = main(["train", "cnn", "--data", f"image-folder:{tmp_path / 'blobs'}", "--image-size", "12",
                 "--widths", "4,8", "--batch-size", "16", "--validation-size", "12", "--learning-rate", "1e30",
                 "--steps", "40", "--log-interval", "2", "--eval-interval", "4", "--name", "cnn-div"])
    err = capsys.readouterr().err
    assert code == 1 and "error: diverged at step" in err and "learning rate" in err, err
    run = tmp_path / "runs" / "cnn-div"
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    for name in ("latest", "best"):
        path = run / "checkpoints" / f"{name}.pt"
        if path.exists():
            model = load_checkpoint(path)["algorithm"]["model"]
            assert all(torch.isfinite(t).all() for t in model.values() if t.is_floating_point()), name


def test_eval_video_on_a_supervised_run_says_what_it_wrote_instead(tmp_path: Path, capsys) -> None:
    from lab.cli import main

    blobs_folder(tmp_path / "blobs")
    assert main(["train", "cnn", "--data", f"image-folder:{tmp_path / 'blobs'}", "--image-size", "12",
                 "--widths", "4,8", "--batch-size", "16", "--validation-size", "12", "--steps", "4",
                 "--eval-interval", "4", "--name", "tiny"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "tiny"), "--video"]) == 0
    out, err = capsys.readouterr()
    assert "note: cnn runs make no video; --video wrote their media instead: confusion_matrix" in err, err
    assert not any(p.suffix == ".mp4" for p in (tmp_path / "runs" / "tiny" / "media").iterdir())
    assert json.loads(out)["media"], "the media it wrote are listed in eval.json's answer"
