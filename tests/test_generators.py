"""Generators: the shared module (Frechet distance, grids), `vae`, `gan` and `lab sample`.

Everything runs on small synthetic 16x16 grayscale folders the tests write themselves, in
process (`lab.cli.main`), with LAB_DATA_DIR pointed at a per-test folder so the GAN's cached
reference classifier never lands in a real dataset folder.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import comparable, lab, ok, one_line_error, read_jsonl, read_png, runs_dir
from lab import load as load_run
from lab.api import LabError, Tracker
from lab.device import resolve_precision
from lab.generative.frechet import FeatureStats, FrechetReference, feature_stats, frechet_distance
from lab.generative.images import grid, save_grid, to_uint8
from lab.generative.reference import cache_folder, file_sha256
from lab.plugins import datasets
from lab.plugins.vae import VAE
from lab.run.checkpoint import load_checkpoint, save_checkpoint
from lab.run.context import RunContext
from lab.run.registry import Registry

SIZE = 16
GAN_FLAGS = ["--image-size", str(SIZE), "--validation-size", "20", "--fld-samples", "64", "--g-width", "8",
             "--d-width", "8", "--latent-dim", "16", "--batch-size", "32"]
VAE_FLAGS = ["--image-size", str(SIZE), "--validation-size", "20", "--hidden", "32", "--latent-dim", "4",
             "--batch-size", "32", "--iw-samples", "50", "--iw-images", "20", "--fld-samples", "32"]
SAMPLE_KEYS = {"val/fld", "eval/fld", "eval/fld_floor", "eval/kid", "eval/kid_std", "eval/precision", "eval/recall"}


# ------------------------------------------------------------------ helpers


# every test gets a data dir of its own: reference classifiers are cached there
pytestmark = pytest.mark.usefixtures("data_dir")


def write_blobs(root: Path, per_class: int = 100, size: int = SIZE) -> Path:
    """Three classes of grayscale images: a horizontal bar, a vertical bar or a square on noise."""
    rng = np.random.default_rng(0)
    for label, (height, width) in enumerate([(2, 10), (10, 2), (6, 6)]):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 40, (size, size), dtype=np.uint8)
            top, left = rng.integers(0, size + 1 - height), rng.integers(0, size + 1 - width)
            image[top : top + height, left : left + width] = 255
            cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return root


def write_loose(root: Path, count: int = 60, size: int = SIZE) -> Path:
    """Images directly in the folder: an unlabelled dataset."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        cv2.imwrite(str(root / f"{i:03d}.png"), rng.integers(0, 256, (size, size), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """300 labelled images: 270 train (20 of them validation), 30 test."""
    return write_blobs(tmp_path_factory.mktemp("generators") / "blobs")


def grid_side(count: int, columns: int, side: int = SIZE, pad: int = 2) -> tuple[int, int]:
    rows = math.ceil(count / columns)
    return pad + rows * (side + pad), pad + columns * (side + pad)


class NullTracker(Tracker):
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Tests look at return values."""


def make_vae(tmp_path: Path, folder: Path, **config) -> VAE:
    registry = Registry()
    registry.add_dataset("datasets", "image-folder", datasets.image_folder)
    ctx = RunContext(device=torch.device("cpu"), seed=3, total_steps=10, run_dir=tmp_path / "run",
                  registry=registry, tracker=NullTracker(), data=f"image-folder:{folder}", data_dir=tmp_path)
    return VAE(VAE.Config(**config), ctx)


# ------------------------------------------------------------------ Frechet distance


def gaussian_features(rng: np.random.Generator, n: int, dim: int, shift: float) -> torch.Tensor:
    mixing = rng.normal(size=(dim, dim))
    return torch.from_numpy(rng.normal(size=(n, dim)) @ mixing + shift)


def reference_frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(A) + tr(B) - 2 tr((A B)^1/2), with numpy's general eigenvalues of A B."""
    x, y = a.numpy(), b.numpy()
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eigenvalues = np.linalg.eigvals(cov_x @ cov_y)  # real and >= 0: A B is similar to A^1/2 B A^1/2
    cross = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * cross)


def test_frechet_distance_matches_the_formula_on_gaussian_features() -> None:
    rng = np.random.default_rng(0)
    a, b = gaussian_features(rng, 400, 6, 0.0), gaussian_features(rng, 300, 6, 0.7)
    stats_a, stats_b = feature_stats(a), feature_stats(b)
    assert torch.allclose(stats_a.mean, a.mean(0)) and stats_a.cov.shape == (6, 6)
    expected = reference_frechet(a, b)
    assert expected > 1.0
    assert frechet_distance(stats_a, stats_b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(stats_b, stats_a) == pytest.approx(expected, rel=1e-7), "symmetric"
    assert frechet_distance(stats_a, stats_a) == pytest.approx(0.0, abs=1e-7)
    # float32 features go through float64 the same way
    assert frechet_distance(feature_stats(a.float()), stats_b) == pytest.approx(expected, rel=1e-4)


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form() -> None:
    mean_a, mean_b = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64)
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    a, b = FeatureStats(mean_a, torch.diag(var_a)), FeatureStats(mean_b, torch.diag(var_b))
    closed = float(((mean_a - mean_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum())
    assert closed == pytest.approx(0.25 + 9.0 + 4.0 + 1.0)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-12)
    assert frechet_distance(b, a) == pytest.approx(closed, rel=1e-12)
    # a singular covariance (a feature that never varies) is no problem
    flat = FeatureStats(mean_a, torch.diag(torch.tensor([0.0, 4.0, 0.25], dtype=torch.float64)))
    assert frechet_distance(flat, a) == pytest.approx(1.0, rel=1e-9)


def test_frechet_distance_grows_with_a_mean_shift() -> None:
    rng = np.random.default_rng(1)
    stats = feature_stats(gaussian_features(rng, 200, 4, 0.0))
    direction = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    distances = [frechet_distance(stats, FeatureStats(stats.mean + s * direction, stats.cov)) for s in (0, 0.5, 1, 2, 4)]
    assert distances[0] == pytest.approx(0.0, abs=1e-7)
    assert all(a < b for a, b in itertools.pairwise(distances))
    # same covariance: exactly the squared shift
    assert distances[-1] == pytest.approx(float((4 * direction).pow(2).sum()), rel=1e-6)


def test_feature_stats_and_reference() -> None:
    with pytest.raises(LabError, match="at least 2 images"):
        feature_stats(torch.zeros(1, 3))
    rng = np.random.default_rng(2)
    images = torch.from_numpy(rng.integers(0, 256, (50, 1, 4, 4), dtype=np.uint8))
    features = lambda x: x.flatten(1).float()[:, :5] / 255  # noqa: E731
    reference = FrechetReference(features, images[:30])
    other = images[30:]
    expected = reference_frechet(other.flatten(1).double()[:, :5] / 255, images[:30].flatten(1).double()[:, :5] / 255)
    assert reference.distance(other) == pytest.approx(expected, rel=1e-5)
    assert reference.distance(reference.stats_of(other)) == pytest.approx(expected, rel=1e-5)
    assert reference.distance(images[:30]) == pytest.approx(0.0, abs=1e-7)


# ------------------------------------------------------------------ pixels and grids


def test_to_uint8_maps_both_ranges() -> None:
    assert to_uint8(torch.tensor([-1.0, 1.0, 3.0, -5.0]), low=-1.0).tolist() == [0, 255, 255, 0]
    assert to_uint8(torch.tensor([0.0, 1.0, 0.2, -0.5, 2.0])).tolist() == [0, 255, 51, 0, 255]
    assert to_uint8(torch.tensor([0.0])).dtype == torch.uint8


def test_grid_places_grey_images_row_by_row(tmp_path: Path) -> None:
    images = torch.stack([torch.full((1, 3, 4), 10 * (i + 1), dtype=torch.uint8) for i in range(5)])
    images[2, 0, 1, 2] = 250  # one marked pixel
    picture = grid(images)  # 3 columns (ceil sqrt 5), 2 rows, 2-pixel gaps
    assert picture.shape == (2 + 2 * (3 + 2), 2 + 3 * (4 + 2), 1) and picture.dtype == np.uint8
    for i in range(5):
        top, left = 2 + (i // 3) * 5, 2 + (i % 3) * 6
        block = picture[top : top + 3, left : left + 4, 0]
        assert torch.equal(torch.from_numpy(block.copy()), images[i, 0]), i
    assert picture[0, :, 0].tolist() == [64] * 20 and picture[:, 0, 0].tolist() == [64] * 12
    assert (picture[7 : 7 + 3, 14 : 14 + 4] == 64).all(), "the sixth cell stays background"

    path = save_grid(images, tmp_path / "grid.png")
    back = read_png(path)
    assert back.shape == (12, 20), "a grey grid is a one-channel PNG"
    assert np.array_equal(back, picture[..., 0])
    assert not list(tmp_path.glob("*.tmp*")), "written atomically, no temporary left behind"


def test_grid_of_colour_images_keeps_rgb_order(tmp_path: Path) -> None:
    red = torch.zeros(3, 2, 2, dtype=torch.uint8)
    red[0] = 200
    blue = torch.zeros(3, 2, 2, dtype=torch.uint8)
    blue[2] = 150
    images = torch.stack([red, blue, red, blue])
    picture = grid(images, columns=4, pad=1)
    assert picture.shape == (1 + 1 * (2 + 1), 1 + 4 * (2 + 1), 3)
    assert picture[1, 1].tolist() == [200, 0, 0] and picture[1, 4].tolist() == [0, 0, 150]
    path = save_grid(images, tmp_path / "colour.png", columns=2)
    back = read_png(path)
    assert back.shape == (2 + 2 * 4, 2 + 2 * 4, 3)
    assert back[2, 2].tolist() == [0, 0, 200], "cv2 reads BGR: the red image is red on disk"
    assert back[2, 6].tolist() == [150, 0, 0]
    assert back[0, 0].tolist() == [64, 64, 64]


# ------------------------------------------------------------------ vae


def test_vae_nelbo_is_recon_plus_kl_for_bernoulli_data(tmp_path: Path) -> None:
    folder = write_blobs(tmp_path / "small", per_class=20)
    vae = make_vae(tmp_path, folder, hidden=(32,), latent_dim=4, batch_size=16, validation_size=10,
                   likelihood="bernoulli", image_size=SIZE)
    assert vae.bernoulli and vae.shape == (1, SIZE, SIZE)
    assert set(vae.test_images.unique().tolist()) <= {0.0, 1.0}, "held-out images are binarised"
    x = vae.test_images[:5]
    with torch.no_grad():
        nelbo, kl, recon = vae.nelbo(x, None)
        mean, log_var = vae.encoder(x)
        logits = vae.decoder(mean)  # no noise: z is the posterior mean
        p = torch.sigmoid(logits)
        expected_recon = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(1)
        posterior = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
        prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
        expected_kl = torch.distributions.kl_divergence(posterior, prior).sum(1)
    assert nelbo.shape == kl.shape == recon.shape == (5,)
    assert torch.allclose(nelbo, recon + kl)
    assert torch.allclose(recon, expected_recon, rtol=1e-4)
    assert torch.allclose(kl, expected_kl, rtol=1e-4, atol=1e-6)
    assert (kl >= 0).all() and (recon > 0).all() and (nelbo > 0).all()
    # a sampled z (generator given) changes the reconstruction term only through z
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sampled, sampled_kl, sampled_recon = vae.nelbo(x, noise)
    assert torch.allclose(sampled_kl, kl) and torch.allclose(sampled, sampled_kl + sampled_recon)
    assert not torch.allclose(sampled_recon, recon)
    assert torch.isfinite(torch.tensor(vae.train_step()["train/loss"]))


def test_vae_importance_weighted_bound_tightens_with_k(tmp_path: Path) -> None:
    folder = write_blobs(tmp_path / "small", per_class=20)
    vae = make_vae(tmp_path, folder, hidden=(32,), latent_dim=4, batch_size=16, validation_size=10,
                   likelihood="bernoulli", image_size=SIZE, fld_samples=16)
    x = vae.test_images[:6]
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        one_sample = torch.stack([vae.iw_bound(x, 1, noise)[0] for _ in range(400)]).mean(0)
        elbo = torch.stack([vae.nelbo(x, noise)[0] for _ in range(400)]).mean(0)
        tight = torch.stack([vae.iw_bound(x, 64, noise)[0] for _ in range(20)]).mean(0)
        loss, kl, recon = vae.iw_bound(x, 64, noise)
    # k = 1 is the ELBO (its KL sampled rather than exact); more samples tighten the bound
    assert torch.allclose(one_sample, elbo, rtol=0.01), (one_sample, elbo)
    assert (tight < one_sample - 0.05).all(), (tight, one_sample)
    assert (kl >= 0).all() and (recon > 0).all() and loss.shape == (6,)
    assert torch.allclose(kl, vae.nelbo(x, None)[1]), "the KL term is the analytic one"


def test_vae_trains_evaluates_and_writes_media(capsys, blobs: Path) -> None:
    ok(capsys, "train", "vae", "--data", f"image-folder:{blobs}", *VAE_FLAGS, "--epochs", "2",
       "--log-interval", "2", "--name", "v")
    run = runs_dir() / "v"
    rows = read_jsonl(run / "metrics.jsonl")
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    evals = [row for row in rows if "eval/nelbo" in row]
    assert [row["global_step"] for row in evals] == [7, 14], "one evaluation an epoch of (250 // 32) steps"
    for row in evals:
        assert {"val/nelbo", "eval/kl", "eval/recon"} <= set(row)
        assert all(math.isfinite(row[k]) for k in ("val/nelbo", "eval/nelbo", "eval/kl", "eval/recon"))
        assert row["eval/nelbo"] == pytest.approx(row["eval/kl"] + row["eval/recon"], rel=1e-5)
        assert row["eval/kl"] >= 0
        assert SAMPLE_KEYS <= set(row), "its samples are measured as every generator's are"
        assert row["eval/fld"] > 0 and 0 <= row["eval/precision"] <= 1 and 0 <= row["eval/recall"] <= 1
    assert (run / "config.yaml").read_text().count("classifier_sha256: ") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 14
    assert summary["key_metric"] == "val/nelbo"
    for kind, count, columns in (("samples", 64, 8), ("reconstructions", 60, 8), ("interpolations", 80, 10)):
        files = sorted((run / "media").glob(f"{kind}-step*.png"))
        assert [f.name for f in files] == [f"{kind}-step000000007.png", f"{kind}-step000000014.png"]
        assert read_png(files[-1]).shape == grid_side(count, columns), kind

    ok(capsys, "eval", str(run))
    result = json.loads((run / "eval.json").read_text())
    assert result["global_step"] == 14
    assert math.isfinite(result["eval/iw_nll"])
    assert result["eval/iw_nll"] <= result["eval/nelbo"] + 5
    assert result["eval/nelbo"] == pytest.approx(evals[-1]["eval/nelbo"], rel=1e-5), "lab eval replays the last evaluation"


def test_vae_trains_on_a_folder_with_fewer_than_16_test_images(capsys, tmp_path: Path) -> None:
    folder = write_blobs(tmp_path / "few", per_class=34)  # 102 images: 10 test images
    ok(capsys, "train", "vae", "--data", f"image-folder:{folder}", "--image-size", str(SIZE), "--validation-size", "10",
       "--hidden", "16", "--latent-dim", "2", "--batch-size", "16", "--steps", "3", "--fld-samples", "16",
       "--name", "few")
    summary = json.loads((runs_dir() / "few" / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert list((runs_dir() / "few" / "media").glob("interpolations-*.png"))


def test_vae_on_unlabelled_images_trains_without_sample_metrics(capsys, tmp_path: Path) -> None:
    loose = write_loose(tmp_path / "loose")
    err = ok(capsys, "train", "vae", "--data", f"image-folder:{loose}", *VAE_FLAGS[:2], "--validation-size", "10",
             "--hidden", "16", "--latent-dim", "2", "--batch-size", "16", "--steps", "3", "--name", "loose")
    assert "no classifier measures the samples" in err
    evals = [row for row in read_jsonl(runs_dir() / "loose" / "metrics.jsonl") if "eval/nelbo" in row]
    assert evals and not any(SAMPLE_KEYS & set(row) for row in evals)
    assert not cache_folder().exists(), "no reference classifier without labels"


def test_vae_resumes_exactly(capsys, blobs: Path) -> None:
    # constant lr: a run created with a 1-epoch budget decays its lr over that epoch, by design
    # one pinned thread: convolutions round differently on 1 and 2 threads, and a run's count
    # otherwise follows the machine's load (lab.device.SharedCores)
    common = ["train", "vae", "--data", f"image-folder:{blobs}", *VAE_FLAGS, "--log-interval", "1", "--seed", "5",
              "--lr-decay", "false", "--threads", "1"]
    ok(capsys, *common, "--epochs", "2", "--name", "straight")
    ok(capsys, *common, "--epochs", "1", "--name", "split")  # stops at the first evaluation (step 7)
    ok(capsys, "resume", str(runs_dir() / "split"), "--epochs", "2")
    straight = read_jsonl(runs_dir() / "straight" / "metrics.jsonl")
    resumed = read_jsonl(runs_dir() / "split" / "metrics.jsonl")
    assert sum("val/nelbo" in row for row in straight) == 2
    assert comparable(resumed) == comparable(straight)
    summaries = [json.loads((runs_dir() / n / "summary.json").read_text()) for n in ("straight", "split")]
    assert summaries[0]["best"] == summaries[1]["best"] and summaries[1]["global_step"] == 14


# ------------------------------------------------------------------ gan


def test_gan_trains_and_measures_frechet_distances(capsys, blobs: Path, data_dir: Path) -> None:
    ok(capsys, "train", "gan", "--data", f"image-folder:{blobs}", *GAN_FLAGS, "--steps", "8",
       "--eval-interval", "4", "--log-interval", "2", "--name", "g")
    run = runs_dir() / "g"
    rows = read_jsonl(run / "metrics.jsonl")
    train = [row for row in rows if "train/d_loss" in row]
    assert [row["global_step"] for row in train] == [2, 4, 6, 8]
    for row in train:
        assert {"train/g_loss", "train/d_real", "train/d_fake"} <= set(row)
        assert 0 < row["train/d_real"] < 1 and 0 < row["train/d_fake"] < 1
        assert row["train/d_loss"] > 0 and row["train/g_loss"] > 0
    evals = [row for row in rows if "eval/fld" in row]
    assert [row["global_step"] for row in evals] == [4, 8]
    for row in evals:
        for key in ("val/fld", "eval/fld", "eval/fld_floor"):
            assert math.isfinite(row[key]) and row[key] >= 0, (key, row)
    assert evals[0]["eval/fld_floor"] == evals[1]["eval/fld_floor"], "the floor depends on real images only"
    assert evals[0]["eval/fld"] != evals[1]["eval/fld"]
    for row in evals:  # in the same features: KID (unbiased: may dip below 0) and precision/recall
        assert math.isfinite(row["eval/kid"]) and row["eval/kid_std"] >= 0
        assert 0 <= row["eval/precision"] <= 1 and 0 <= row["eval/recall"] <= 1

    cached = list(cache_folder().glob("cnn-*.pt"))
    assert len(cached) == 1, "the reference cnn is trained once and cached in the user's cache folder"
    assert str(cache_folder()).startswith(os.environ["LAB_CACHE_DIR"])
    assert not any(data_dir.iterdir()) and not any(blobs.glob("*.pt")), "nothing is written beside the data"
    for step in (4, 8):
        assert read_png(run / "media" / f"samples-step{step:09d}.png").shape == grid_side(100, 10)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["key_metric"] == "val/fld"
    assert (run / "checkpoints" / "best.pt").is_file()


def test_gan_records_the_classifier_hash_in_config_yaml(capsys, blobs: Path, data_dir: Path) -> None:
    ok(capsys, "train", "gan", "--data", f"image-folder:{blobs}", *GAN_FLAGS, "--steps", "2", "--name", "h")
    (cached,) = cache_folder().glob("cnn-*.pt")
    config = yaml.safe_load((runs_dir() / "h" / "config.yaml").read_text())["config"]
    digest = config["classifier_sha256"]
    assert isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest), config
    assert digest == file_sha256(cached)


def test_gan_resume_refuses_a_changed_classifier(capsys, blobs: Path, data_dir: Path) -> None:
    ok(capsys, "train", "gan", "--data", f"image-folder:{blobs}", *GAN_FLAGS, "--steps", "2", "--name", "c")
    (cached,) = cache_folder().glob("cnn-*.pt")
    state = load_checkpoint(cached)
    weights = state["algorithm"]["model"]
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim > 1)
    weights[name] = weights[name] + 0.5  # another classifier: distances measured in another space
    save_checkpoint(state, cached)
    one_line_error(capsys, ["resume", str(runs_dir() / "c"), "--steps", "4"], "changed since this run began")


def test_gan_conditional_trains(capsys, blobs: Path) -> None:
    ok(capsys, "train", "gan", "--data", f"image-folder:{blobs}", *GAN_FLAGS, "--conditional", "--steps", "4",
       "--name", "cond")
    run = runs_dir() / "cond"
    rows = read_jsonl(run / "metrics.jsonl")
    assert any("train/g_loss" in row for row in rows)
    (last,) = [row for row in rows if "eval/fld" in row]
    assert math.isfinite(last["eval/fld"])
    generator = load_checkpoint(run / "checkpoints" / "latest.pt")["algorithm"]["g"]
    assert generator["embed.weight"].shape == (3, 16), "one embedding per class"
    assert "embed.weight" in load_checkpoint(run / "checkpoints" / "latest.pt")["algorithm"]["d"]


@pytest.mark.parametrize("ema, flags", [("0", []), ("0.9", ["--loss", "hinge", "--spectral-norm"])])
def test_gan_resumes_exactly(capsys, blobs: Path, ema: str, flags: list[str]) -> None:
    common = ["train", "gan", "--data", f"image-folder:{blobs}", *GAN_FLAGS, "--eval-interval", "3", "--ema", ema,
              *flags, "--log-interval", "1", "--seed", "4", "--threads", "1"]  # pinned: see test_vae_resumes_exactly
    ok(capsys, *common, "--steps", "12", "--name", "straight")
    ok(capsys, *common, "--steps", "6", "--name", "split")  # evaluated and checkpointed at step 6
    ok(capsys, "resume", str(runs_dir() / "split"), "--steps", "12")
    straight = read_jsonl(runs_dir() / "straight" / "metrics.jsonl")
    resumed = read_jsonl(runs_dir() / "split" / "metrics.jsonl")
    assert [row["global_step"] for row in straight if "val/fld" in row] == [3, 6, 9, 12]
    assert comparable(resumed) == comparable(straight)
    summaries = [json.loads((runs_dir() / n / "summary.json").read_text()) for n in ("straight", "split")]
    assert (summaries[0]["best"], summaries[0]["best_step"]) == (summaries[1]["best"], summaries[1]["best_step"])
    states = [load_checkpoint(runs_dir() / n / "checkpoints" / "latest.pt")["algorithm"] for n in ("straight", "split")]
    for net in ("g", "d", "g_ema") if ema != "0" else ("g", "d"):
        assert all(torch.equal(states[0][net][k], states[1][net][k]) for k in states[0][net]), net
    assert ("g_ema" in states[0]) == (ema != "0")


def test_gan_with_the_hinge_loss_and_a_spectrally_normalised_discriminator(capsys, blobs: Path) -> None:
    ok(capsys, "train", "gan", "--data", f"image-folder:{blobs}", *GAN_FLAGS, "--steps", "12", "--eval-interval", "12",
       "--loss", "hinge", "--spectral-norm", "--log-interval", "1", "--name", "sn")
    rows = read_jsonl(runs_dir() / "sn" / "metrics.jsonl")
    d_losses = [row["train/d_loss"] for row in rows if "train/d_loss" in row]
    assert len(d_losses) == 12 and all(0 <= v < 4 for v in d_losses), "hinge: two means of relu(1 -+ D)"
    model = load_run(str(runs_dir() / "sn"))
    try:
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.d.modules())
        convs = [m for m in model.d.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
        with torch.no_grad():  # each weight's largest singular value, estimated by the power iteration, is 1
            top = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in convs]
        assert all(0.8 < value < 1.2 for value in top), top
    finally:
        model.close()


def test_gan_with_a_classifier_run_trains_on_unlabelled_data(capsys, blobs: Path, tmp_path: Path) -> None:
    ok(capsys, "train", "cnn", "--data", f"image-folder:{blobs}", "--image-size", str(SIZE), "--validation-size", "20",
       "--widths", "4,8", "--batch-size", "64", "--steps", "3", "--name", "judge")
    loose = write_loose(tmp_path / "loose")
    judge = runs_dir() / "judge"
    ok(capsys, "train", "gan", "--data", f"image-folder:{loose}", *GAN_FLAGS[:2], "--validation-size", "10",
       "--fld-samples", "16", "--g-width", "4", "--d-width", "4", "--batch-size", "16", "--steps", "2",
       "--classifier", str(judge), "--name", "free")
    (row,) = [r for r in read_jsonl(runs_dir() / "free" / "metrics.jsonl") if "eval/fld" in r]
    assert math.isfinite(row["eval/fld"]) and row["eval/fld"] >= 0
    assert not cache_folder().exists(), "no default classifier was trained"


# ------------------------------------------------------------------ lab sample


def test_lab_sample_writes_a_grid_and_refuses_mistakes(capsys, blobs: Path) -> None:
    ok(capsys, "train", "gan", "--data", f"image-folder:{blobs}", *GAN_FLAGS, "--steps", "2", "--name", "s")
    run = str(runs_dir() / "s")
    code, _ = lab(capsys, "sample", run, "--n", "16", "--out", "g.png")
    assert code == 0
    picture = read_png(Path("g.png"))
    assert picture.shape == grid_side(16, 4), "16 samples: a 4x4 grid of 16x16 images"
    assert picture.std() > 0

    before = Path("g.png").read_bytes()
    one_line_error(capsys, ["sample", run, "--n", "16", "--out", "g.png"], "exists")
    assert Path("g.png").read_bytes() == before, "never overwritten"
    one_line_error(capsys, ["sample", run, "--n", "0", "--out", "zero.png"], "--n must be a positive integer")
    one_line_error(capsys, ["sample", run, "--n", "many", "--out", "x.png"], "--n")
    one_line_error(capsys, ["sample", run, "--n", "4", "--out", "grid.jpg"], ".png")
    assert not Path("zero.png").exists() and not Path("grid.jpg").exists()


def test_lab_sample_from_a_vae(capsys, blobs: Path) -> None:
    ok(capsys, "train", "vae", "--data", f"image-folder:{blobs}", *VAE_FLAGS, "--steps", "3", "--name", "vs")
    ok(capsys, "sample", str(runs_dir() / "vs"), "--n", "9", "--out", "v.png")
    assert read_png(Path("v.png")).shape == grid_side(9, 3)


def test_lab_sample_needs_a_generator_run(capsys, blobs: Path) -> None:
    ok(capsys, "train", "logreg", "--data", f"image-folder:{blobs}", "--image-size", str(SIZE), "--validation-size",
       "20", "--batch-size", "32", "--steps", "3", "--name", "classifier")
    one_line_error(capsys, ["sample", str(runs_dir() / "classifier"), "--n", "4", "--out", "c.png"],
                   "lab sample needs a generator run")
    assert not Path("c.png").exists()


# ------------------------------------------------------------------ bad input


def test_gan_on_unlabelled_data_without_a_classifier_is_one_line(capsys, tmp_path: Path) -> None:
    loose = write_loose(tmp_path / "loose")
    one_line_error(capsys, ["train", "gan", "--data", f"image-folder:{loose}", *GAN_FLAGS[:2], "--validation-size", "10",
                            "--fld-samples", "16", "--g-width", "4", "--d-width", "4", "--batch-size", "16",
                            "--steps", "4"], "label")
    assert not list(runs_dir().glob("*")), "a mistake found before training leaves no run behind"


@pytest.mark.parametrize("algo, flags, expected", [
    ("gan", ["--g-lr", "-1"], "--g-lr must be positive"),
    ("gan", ["--beta1", "1"], "--beta1 must be in [0, 1)"),
    ("gan", ["--ema", "1"], "--ema must be in [0, 1)"),
    ("gan", ["--image-size", "12"], "--image-size 32"),
    ("gan", ["--validation-size", "270"], "--validation-size 270 must be smaller than the 270 training images"),
    ("vae", ["--latent-dim", "0"], "--latent-dim must be positive"),
    ("vae", ["--iw-k", "0"], "--iw-k must be positive"),
    ("vae", ["--arch", "conv", "--channels", "4,4,4,4,4"], "divisible by 32"),
    ("gan", ["--precision", "bf16"], "gan runs in fp32 only (it does not autocast its passes); drop --precision bf16"),
])
def test_bad_generator_settings_are_one_line(capsys, blobs: Path, algo: str, flags: list[str], expected: str) -> None:
    defaults = ["--image-size", str(SIZE), "--validation-size", "20", "--steps", "2"]  # flags given later win
    one_line_error(capsys, ["train", algo, "--data", f"image-folder:{blobs}", *defaults, *flags], expected)
    assert not list(runs_dir().glob("*"))


def test_vae_trains_on_the_importance_weighted_bound(capsys, blobs: Path) -> None:
    ok(capsys, "train", "vae", "--data", f"image-folder:{blobs}", *VAE_FLAGS, "--log-interval", "1",
       "--epochs", "2", "--iw-k", "8", "--name", "iwae")
    rows = read_jsonl(runs_dir() / "iwae" / "metrics.jsonl")
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert all(math.isfinite(v) for v in losses) and sum(losses[-3:]) < sum(losses[:3]), losses
    assert yaml.safe_load((runs_dir() / "iwae" / "config.yaml").read_text())["config"]["iw_k"] == 8


def test_vae_learning_rate_decays_to_zero_over_the_budget(capsys, blobs: Path) -> None:
    ok(capsys, "train", "vae", "--data", f"image-folder:{blobs}", *VAE_FLAGS, "--log-interval", "1",
       "--epochs", "2", "--name", "decay")
    lrs = [row["train/lr"] for row in read_jsonl(runs_dir() / "decay" / "metrics.jsonl") if "train/lr" in row]
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in itertools.pairwise(lrs)) and lrs[-1] < 1e-3 / len(lrs) * 1.5


# ------------------------------------------------------------------ diffusion

DIFFUSION_FLAGS = ["--image-size", str(SIZE), "--validation-size", "20", "--fld-samples", "32", "--widths", "8,16",
                   "--batch-size", "32", "--sample-steps", "2", "--warmup", "0.05"]


def test_diffusion_learns_samples_and_measures_itself(capsys, blobs: Path) -> None:
    ok(capsys, "train", "diffusion", "--data", f"image-folder:{blobs}", *DIFFUSION_FLAGS, "--steps", "40",
       "--eval-interval", "20", "--log-interval", "5", "--name", "d", "--threads", "1")
    run = runs_dir() / "d"
    rows = read_jsonl(run / "metrics.jsonl")
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0], losses  # it learns the velocity field
    evals = [row for row in rows if "eval/fld" in row]
    assert [row["global_step"] for row in evals] == [20, 40]
    for row in evals:
        assert all(math.isfinite(row[k]) for k in ("val/fld", "eval/fld", "eval/fld_floor", "eval/kid"))
        assert 0 <= row["eval/precision"] <= 1 and 0 <= row["eval/recall"] <= 1
    assert read_png(run / "media" / f"samples-step{40:09d}.png").shape == grid_side(100, 10)
    assert (run / "checkpoints" / "best.pt").is_file()
    ok(capsys, "sample", str(run), "--n", "9", "--out", "nine.png")
    assert read_png(Path("nine.png")).shape == grid_side(9, 3)
    agent = load_run(run)
    try:
        images = agent.sample(5)
        assert images.dtype == torch.uint8 and images.shape == (5, 1, SIZE, SIZE)
        same = [agent.sample(5, torch.Generator().manual_seed(1)) for _ in range(2)]
        assert torch.equal(*same), "the solver is deterministic: the same noise gives the same images"
    finally:
        agent.close()


def test_diffusion_by_ddpm_with_labels_and_guidance(capsys, blobs: Path) -> None:
    ok(capsys, "train", "diffusion", "--data", f"image-folder:{blobs}", *DIFFUSION_FLAGS, "--objective", "eps",
       "--conditional", "--guidance", "2", "--steps", "6", "--eval-interval", "6", "--name", "ddpm")
    agent = load_run(runs_dir() / "ddpm")
    try:
        guided = agent.sample(6)
        agent.config.guidance = 0.0
        assert not torch.equal(guided, agent.sample(6)), "the guidance weight changes what is drawn"
        assert agent.classes == 3 and agent.ema.model.label.num_embeddings == 4, "three classes and the null label"
    finally:
        agent.close()


def test_diffusion_resumes_exactly(capsys, blobs: Path) -> None:
    # constant lr (a run created with a 3-step budget decays over 3 steps, by design); one
    # pinned thread: see test_vae_resumes_exactly
    common = ["train", "diffusion", "--data", f"image-folder:{blobs}", *DIFFUSION_FLAGS, "--eval-interval", "3",
              "--log-interval", "1", "--seed", "4", "--threads", "1", "--lr-decay", "false"]
    ok(capsys, *common, "--steps", "6", "--name", "straight")
    ok(capsys, *common, "--steps", "3", "--name", "split")
    ok(capsys, "resume", str(runs_dir() / "split"), "--steps", "6")
    straight = read_jsonl(runs_dir() / "straight" / "metrics.jsonl")
    assert comparable(read_jsonl(runs_dir() / "split" / "metrics.jsonl")) == comparable(straight)
    weights = [load_checkpoint(runs_dir() / name / "checkpoints" / "latest.pt")["algorithm"]["ema"]
               for name in ("straight", "split")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_diffusion_in_bf16_runs_its_passes_in_bfloat16_on_fp32_weights(capsys, blobs: Path) -> None:
    ok(capsys, "train", "diffusion", "--data", f"image-folder:{blobs}", *DIFFUSION_FLAGS, "--steps", "30",
       "--eval-interval", "30", "--log-interval", "5", "--precision", "bf16", "--name", "bf16", "--threads", "1")
    run = runs_dir() / "bf16"
    losses = [row["train/loss"] for row in read_jsonl(run / "metrics.jsonl") if "train/loss" in row]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.8 * losses[0], losses
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["run"]["precision"] == "bf16" and doc["precision"] == "bf16"
    agent = load_run(run)
    try:
        seen: list[torch.dtype] = []
        agent.ema.model.stem.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        images = agent.sample(3)
        assert seen and set(seen) == {torch.bfloat16}, "a loaded bf16 run samples under autocast too"
        assert images.dtype == torch.uint8 and images.shape == (3, 1, SIZE, SIZE)
        assert {p.dtype for p in agent.net.parameters()} == {torch.float32}, "weights stay fp32"
        agent.ctx.precision = "fp32"
        seen.clear()
        agent.sample(1)
        assert set(seen) == {torch.float32}
    finally:
        agent.close()
    del doc["run"]["precision"]  # a run made before --precision existed sampled in fp32, whatever auto picks now
    (run / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    agent = load_run(run)
    try:
        assert agent.ctx.precision == "fp32"
    finally:
        agent.close()


def test_precision_auto_is_bf16_only_for_plugins_that_autocast_on_fast_bf16_devices(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_precision("auto", True, cpu) == "bf16" and resolve_precision("auto", False, cpu) == "fp32"
    assert resolve_precision("fp32", True, cpu) == "fp32" and resolve_precision("bf16", True, cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto", True, cpu) == "fp32", "no AMX: bf16 autocast is slower there"
    assert resolve_precision("auto", True, torch.device("mps")) == "fp32"


def test_diffusion_settings_that_cannot_work_are_one_line(capsys, blobs: Path) -> None:
    one_line_error(capsys, ["train", "diffusion", "--data", f"image-folder:{blobs}", "--widths", "12,16"],
                   "--widths takes multiples of 8")
    one_line_error(capsys, ["train", "diffusion", "--data", f"image-folder:{blobs}", "--image-size", "18",
                            "--widths", "8,16,16"], "needs sides divisible by 4")
