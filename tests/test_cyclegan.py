"""`cyclegan`: its networks, image pool, learning-rate schedule, training, exact resume and
`lab sample RUN --input DIR` (image-to-image translation of a folder).

Everything runs in process (`lab.cli.main`) on synthetic 16x16 grayscale data the tests
make themselves: an unpaired image folder (trainA/ trainB/ testA/ testB/, unlabelled), and
`shape-pairs`, a labelled unpaired dataset registered by tests/cyclegan_plugins/ (the
folder layout cannot carry labels, and class preservation needs them on both domains).
LAB_DATA_DIR points at a per-test folder so the cached reference classifier of domain B
never lands in a real dataset folder. Networks are tiny and runs use one torch thread
(two threads on a busy 2-core machine are ten times slower for these small ops).
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import lab as lab_package
from conftest import TESTS, comparable, lab, ok, one_line_error, read_jsonl, read_png, runs_dir
from lab.api import Tracker
from lab.generative.images import read_folder
from lab.generative.reference import cache_folder, cache_path, file_sha256
from lab.plugins.cyclegan import (
    CycleGAN,
    ImagePool,
    ResBlock,
    patch_discriminator,
    resnet_generator,
    scaled_d_layers,
)
from lab.run.checkpoint import load_checkpoint
from lab.run.context import RunContext
from lab.run.discovery import load_lab

CYCLEGAN_PLUGINS = TESTS / "cyclegan_plugins"
SIZE = 16
TINY = ["--g-width", "4", "--d-width", "4", "--res-blocks", "1", "--batch-size", "8", "--validation-size", "10",
        "--pool-size", "4", "--threads", "1"]
TRAIN_KEYS = {"train/g_loss", "train/d_loss", "train/gan_loss", "train/cycle_loss", "train/identity_loss", "train/lr"}
EVAL_KEYS = {"eval/cycle_l1_a", "eval/cycle_l1_b"}
PRESERVATION_KEYS = {"val/class_preservation", "eval/class_preservation"}
SAMPLE_KEYS = {"eval/fld", "eval/fld_floor", "eval/kid", "eval/kid_std", "eval/precision", "eval/recall"}
SHAPES = ((2, 10), (10, 2), (6, 6))  # horizontal bar, vertical bar, square


# ------------------------------------------------------------------ helpers


# every test gets a data dir of its own: reference classifiers are cached there
pytestmark = pytest.mark.usefixtures("data_dir")


def shape_image(rng: np.random.Generator, label: int, size: int = SIZE) -> np.ndarray:
    image = rng.integers(0, 40, (size, size), dtype=np.uint8)
    height, width = SHAPES[label]
    top, left = rng.integers(0, size + 1 - height), rng.integers(0, size + 1 - width)
    image[top : top + height, left : left + width] = 255
    return image


def write_unpaired(root: Path, train: int = 40, test: int = 8) -> Path:
    """trainA/ trainB/ testA/ testB/ of 16x16 grayscale PNGs; B is inverted (unlabelled: no class folders)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for side in "AB":
            folder = root / f"{split}{side}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = shape_image(rng, i % 3)
                cv2.imwrite(str(folder / f"{i:03d}.png"), image if side == "A" else 255 - image)
    return root


def write_classes(root: Path, per_class: int = 20) -> Path:
    """A single labelled domain: CLASS/ sub-folders."""
    rng = np.random.default_rng(1)
    for label in range(3):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{i:03d}.png"), shape_image(rng, label))
    return root


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory) -> Path:
    return write_unpaired(tmp_path_factory.mktemp("cyclegan") / "unpaired")


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """`--threads 1` runs in this process set torch's thread count; give the next test file the old one."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shape_pairs(monkeypatch) -> str:
    """Enable the local plugin that registers the labelled `shape-pairs` dataset."""
    monkeypatch.setenv("LAB_PLUGINS_DIR", str(CYCLEGAN_PLUGINS))
    monkeypatch.delenv("LAB_TEST_STOP_AT", raising=False)
    return "shape-pairs"


def train(capsys, data: str, name: str, *flags: str) -> Path:
    ok(capsys, "train", "cyclegan", "--data", data, *TINY, *flags, "--name", name)
    return runs_dir() / name


class NullTracker(Tracker):
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Tests look at return values."""


def make_cyclegan(tmp_path: Path, total_steps: int = 10, **config) -> CycleGAN:
    """A CycleGAN on shape-pairs built from a Context (no run directory, no reference classifier)."""
    torch.set_num_threads(1)
    registry = load_lab(CYCLEGAN_PLUGINS).registry
    ctx = RunContext(device=torch.device("cpu"), seed=3, total_steps=total_steps, run_dir=tmp_path / "run",
                  registry=registry, tracker=NullTracker(), data="shape-pairs", data_dir=tmp_path, training=False)
    settings = dict(g_width=4, d_width=4, res_blocks=1, batch_size=8, validation_size=10, pool_size=4)
    return CycleGAN(CycleGAN.Config(**{**settings, **config}), ctx)


# ------------------------------------------------------------------ networks


def receptive_field(net: nn.Sequential) -> int:
    """Side of the input patch one output logit sees, from the convolutions' kernels and strides."""
    field, jump = 1, 1
    for layer in net:
        if isinstance(layer, nn.Conv2d):
            field += (layer.kernel_size[0] - 1) * jump
            jump *= layer.stride[0]
    return field


def measured_receptive_field(net: nn.Sequential, size: int) -> int:
    """The same, measured: which input pixels move the centre logit (norms removed, as
    instance norm mixes in every pixel through its mean)."""
    plain = nn.Sequential(*[nn.Identity() if isinstance(m, nn.InstanceNorm2d) else m for m in net]).double()
    x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = plain(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero().flatten()
    cols = x.grad[0, 0].abs().sum(0).nonzero().flatten()
    assert int(rows[-1] - rows[0]) == int(cols[-1] - cols[0])
    return int(rows[-1] - rows[0]) + 1


@pytest.mark.parametrize("size, layers, side, field", [(28, 1, 12, 16), (256, 3, 30, 70), (64, 2, 14, 34)])
def test_patch_discriminator_output_and_patch_size(size: int, layers: int, side: int, field: int) -> None:
    torch.manual_seed(0)
    net = patch_discriminator(1, 8, layers)
    with torch.no_grad():
        out = net(torch.randn(2, 1, size, size))
    assert out.shape == (2, 1, side, side)
    assert receptive_field(net) == field
    assert measured_receptive_field(net, size) == field, "an interior logit sees a field x field patch"
    strides = [m.stride[0] for m in net if isinstance(m, nn.Conv2d)]
    assert strides == [2] * layers + [1, 1], "layers stride-2 convolutions, then two stride-1"
    widths = [m.out_channels for m in net if isinstance(m, nn.Conv2d)]
    assert widths == [8 * min(2**n, 8) for n in range(layers + 1)] + [1]


def test_reference_patchgan_widths_cap_at_eight_times() -> None:
    net = patch_discriminator(3, 64, 5)
    widths = [m.out_channels for m in net if isinstance(m, nn.Conv2d)]
    assert widths == [64, 128, 256, 512, 512, 512, 1]


@pytest.mark.parametrize("channels, size", [(1, 28), (1, 32), (3, 28), (3, 32)])
def test_resnet_generator_keeps_the_image_shape(channels: int, size: int) -> None:
    torch.manual_seed(0)
    net = resnet_generator(channels, 4, 2)
    x = torch.rand(3, channels, size, size) * 2 - 1
    with torch.no_grad():
        y = net(x)
    assert y.shape == (3, channels, size, size)
    assert y.min() >= -1 and y.max() <= 1 and isinstance(net[-1], nn.Tanh)
    assert sum(isinstance(m, ResBlock) for m in net) == 2
    assert max(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)) == 16, "4 x width in the blocks"


def test_scaled_d_layers() -> None:
    assert [scaled_d_layers(s) for s in (16, 28, 63, 64, 128, 255, 256, 512)] == [1, 1, 1, 2, 2, 2, 3, 3]


def test_built_model_scales_its_discriminator_and_initialises_weights(tmp_path: Path) -> None:
    model = make_cyclegan(tmp_path)
    assert model.image_shape == (1, SIZE, SIZE)
    for d in (model.d_a, model.d_b):
        assert sum(isinstance(m, nn.Conv2d) for m in d) == 1 + scaled_d_layers(SIZE) + 1
    convs = [m for net in model.networks() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    biases = [m.bias for m in convs]
    assert weights.std().item() == pytest.approx(0.02, rel=0.1) and abs(weights.mean().item()) < 0.003
    assert all(torch.count_nonzero(b) == 0 for b in biases)
    assert len(model.data_a) == (120 - 10) // 8, "A's validation images are held out of training"
    assert len(model.data_b) == 256 // 8 and model.steps_per_epoch == 256 // 8
    model.close()


# ------------------------------------------------------------------ image pool


def pool_of(size: int, seed: int = 0) -> ImagePool:
    return ImagePool(size, (1, 2, 2), torch.device("cpu"), torch.Generator().manual_seed(seed))


def distinct(count: int, start: int = 0) -> torch.Tensor:
    """`count` images no two alike: image i is filled with start + i."""
    return (torch.arange(start, start + count, dtype=torch.float32)).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def test_image_pool_passes_the_first_images_then_mixes_in_stored_ones() -> None:
    pool = pool_of(3)
    first = distinct(3)
    out = pool.query(first)
    assert torch.equal(out, first), "until the pool is full every image passes through"
    assert pool.count == 3 and torch.equal(pool.images, first)

    swapped = kept = 0
    for q in range(60):
        image = distinct(1, start=100 + q)
        before = pool.images.clone()
        out = pool.query(image)
        assert out.shape == image.shape and torch.equal(image, distinct(1, start=100 + q)), "input untouched"
        if torch.equal(out, image):
            kept += 1
            assert torch.equal(pool.images, before), "an image shown as is is not stored"
        else:
            swapped += 1
            # a stored image comes back, and the new one takes its slot
            (slot,) = [j for j in range(3) if torch.equal(before[j], out[0])]
            assert torch.equal(pool.images[slot], image[0])
            assert all(torch.equal(pool.images[j], before[j]) for j in range(3) if j != slot)
        assert pool.count == 3
    assert swapped > 15 and kept > 15, (swapped, kept)


def test_image_pool_fills_within_one_batch_and_detaches() -> None:
    pool = pool_of(4, seed=1)
    images = distinct(6).requires_grad_(True)
    out = pool.query(images)
    assert torch.equal(out[:4], images[:4].detach()) and pool.count == 4
    assert not out.requires_grad
    for i in (4, 5):  # the pool was full for these: each is itself or one of the first four
        assert any(torch.equal(out[i], images[j].detach()) for j in (0, 1, 2, 3, i))


def test_image_pool_of_size_zero_returns_its_input() -> None:
    pool = pool_of(0)
    images = distinct(5).requires_grad_(True)
    for _ in range(3):
        assert pool.query(images) is images
    assert pool.count == 0 and pool.state_dict()["count"] == 0


@pytest.mark.parametrize("queries", [1, 6])  # half full, and full
def test_image_pool_state_round_trips(queries: int) -> None:
    pool = pool_of(4, seed=2)
    for q in range(queries):
        pool.query(distinct(2, start=10 * q))
    state = pool.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # checkpoints load with weights_only=True
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["count"] == min(4, 2 * queries) and len(loaded["images"]) == loaded["count"]

    copy = ImagePool(4, (1, 2, 2), torch.device("cpu"), torch.Generator())
    copy.generator.set_state(pool.generator.get_state())  # the runner saves the random streams
    copy.load_state_dict(loaded)
    assert copy.count == pool.count and torch.equal(copy.images, pool.images)
    state["images"].add_(1000)  # the state is a copy, not a view of the pool
    assert pool.images.max() < 1000
    for q in range(queries, queries + 6):
        images = distinct(2, start=10 * q)
        assert torch.equal(pool.query(images), copy.query(images))
    assert torch.equal(pool.images, copy.images) and pool.count == copy.count


# ------------------------------------------------------------------ learning-rate schedule


@pytest.mark.parametrize("total, fraction, expected", [
    (10, 0.5, [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0]),
    (8, 0.25, [1, 1, 1, 1, 1, 1, 1, 0.5, 0]),
    (10, 1.0, [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0]),
])
def test_learning_rate_is_constant_then_decays_linearly_to_zero(tmp_path: Path, total: int, fraction: float,
                                                                 expected: list[float]) -> None:
    model = make_cyclegan(tmp_path, total_steps=total, decay_fraction=fraction, g_lr=2e-4, d_lr=1e-3)
    for step, factor in enumerate(expected):
        model.global_step = step
        assert model.set_learning_rates() == pytest.approx(2e-4 * factor, abs=1e-12), step
        assert all(g["lr"] == pytest.approx(2e-4 * factor, abs=1e-12) for g in model.g_opt.param_groups)
        assert all(g["lr"] == pytest.approx(1e-3 * factor, abs=1e-12) for g in model.d_opt.param_groups)
    model.global_step = total + 5
    assert model.set_learning_rates() == 0.0, "past the budget the rate stays at zero"


def test_decay_fraction_zero_keeps_the_learning_rate_constant(tmp_path: Path) -> None:
    model = make_cyclegan(tmp_path, total_steps=10, decay_fraction=0.0)
    for step in (0, 5, 9):
        model.global_step = step
        assert model.set_learning_rates() == pytest.approx(2e-4), step


def test_one_training_step_combines_its_losses_as_configured(tmp_path: Path) -> None:
    model = make_cyclegan(tmp_path, lambda_cycle=3.0, lambda_identity=0.5)
    before = [p.detach().clone() for p in model.g_ab.parameters()]
    metrics = model.train_step()
    assert model.global_step == 1 and set(metrics) == TRAIN_KEYS
    assert metrics["train/g_loss"] == pytest.approx(metrics["train/gan_loss"] + 3.0 * metrics["train/cycle_loss"]
                                                    + 3.0 * 0.5 * metrics["train/identity_loss"], rel=1e-5)
    assert metrics["train/identity_loss"] > 0 and metrics["train/d_loss"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.g_ab.parameters(), strict=True)), "the generators learn"
    assert model.pool_a.count == model.pool_b.count == 4, "pools of 4 filled by one batch of 8"

    plain = make_cyclegan(tmp_path, lambda_identity=0.0)
    metrics = plain.train_step()
    assert metrics["train/identity_loss"] == 0.0
    assert metrics["train/g_loss"] == pytest.approx(metrics["train/gan_loss"] + 10.0 * metrics["train/cycle_loss"],
                                                    rel=1e-5)


def test_class_preservation_is_the_judges_agreement_on_translated_a_images(tmp_path: Path) -> None:
    model = make_cyclegan(tmp_path)
    seen = []

    def judge(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(images)
        class_zero = torch.zeros(len(images), dtype=torch.long)
        return images.flatten(1).float(), torch.nn.functional.one_hot(class_zero, 3).float()

    measured = []

    def sample_metrics(images: torch.Tensor) -> dict[str, float]:
        measured.append(images)
        return {"eval/fld": 1.5}

    model.quality = SimpleNamespace(classifier=judge, metrics=sample_metrics)  # says "class 0" for everything
    metrics = model.evaluate()
    val_labels = model.data.a.train_labels[model.val_rows]
    assert len(val_labels) == 10
    assert metrics["val/class_preservation"] == pytest.approx((val_labels == 0).float().mean().item())
    assert metrics["eval/class_preservation"] == pytest.approx((model.data.a.test_labels == 0).float().mean().item())
    assert torch.equal(seen[0], model.translate(model.data.a.train_images[model.val_rows])), "A translated to B"
    (scored,) = measured
    assert torch.equal(scored, model.translate(model.data.a.test_images)), "the sample metrics see test A in B"
    assert metrics["eval/fld"] == 1.5
    for key in EVAL_KEYS:
        assert 0 <= metrics[key] <= 2 and math.isfinite(metrics[key])


# ------------------------------------------------------------------ training from the CLI


def test_cyclegan_trains_on_an_unpaired_folder(capsys, unpaired: Path, data_dir: Path) -> None:
    run = train(capsys, f"image-folder:{unpaired}", "u", "--image-size", str(SIZE), "--steps", "4",
                "--eval-interval", "2", "--log-interval", "1")
    rows = read_jsonl(run / "metrics.jsonl")
    trains = [row for row in rows if "train/g_loss" in row]
    assert [row["global_step"] for row in trains] == [1, 2, 3, 4]
    for row in trains:
        assert TRAIN_KEYS <= set(row)
        assert all(math.isfinite(row[k]) for k in TRAIN_KEYS)
        assert row["train/d_loss"] > 0 and row["train/cycle_loss"] > 0 and row["train/identity_loss"] > 0
    # a budget of 4 with the default decay fraction 0.5: steps 0..2 at the full rate, step 3 at half
    assert [row["train/lr"] for row in trains] == pytest.approx([2e-4, 2e-4, 2e-4, 1e-4])
    evals = [row for row in rows if "eval/cycle_l1_a" in row]
    assert [row["global_step"] for row in evals] == [2, 4]
    for row in evals:
        assert EVAL_KEYS <= set(row) and all(0 <= row[k] <= 2 for k in EVAL_KEYS)
        assert not PRESERVATION_KEYS & set(row), "the folder layout has no labels: no class preservation"
        assert not SAMPLE_KEYS & set(row), "nor a classifier to measure the translations in"
    for name in ("a2b2a", "b2a2b"):
        files = sorted((run / "media").glob(f"{name}-step*.png"))
        assert [f.name for f in files] == [f"{name}-step000000002.png", f"{name}-step000000004.png"]
        # 8 test images x (source, translated, back again): 4 rows of two triples, 16-pixel images
        picture = read_png(files[-1])
        assert picture.shape == (2 + 4 * (SIZE + 2), 2 + 6 * (SIZE + 2))
        source = read_png(unpaired / f"test{name[0].upper()}" / "000.png")
        assert np.array_equal(picture[2 : 2 + SIZE, 2 : 2 + SIZE], source), "each triple starts with its source"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4
    assert summary["key_metric"] == "val/class_preservation"
    assert (run / "checkpoints" / "latest.pt").is_file()
    config = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert config["classifier_sha256"] is None
    assert not cache_folder().exists(), "no classifier without labels"


def test_cyclegan_scores_class_preservation_on_labelled_domains(capsys, shape_pairs: str, data_dir: Path) -> None:
    run = train(capsys, shape_pairs, "labelled", "--steps", "4", "--eval-interval", "2", "--log-interval", "2")
    rows = read_jsonl(run / "metrics.jsonl")
    evals = [row for row in rows if "eval/cycle_l1_a" in row]
    assert [row["global_step"] for row in evals] == [2, 4]
    for row in evals:
        assert PRESERVATION_KEYS | EVAL_KEYS | SAMPLE_KEYS <= set(row)
        assert row["eval/fld"] >= 0 and row["eval/fld_floor"] >= 0 and 0 <= row["eval/precision"] <= 1
        assert 0 <= row["eval/recall"] <= 1 and math.isfinite(row["eval/kid"]) and "val/fld" not in row
        for key in PRESERVATION_KEYS:
            assert 0 <= row[key] <= 1, (key, row)
        assert row["val/class_preservation"] * 10 == pytest.approx(round(row["val/class_preservation"] * 10)), \
            "a fraction of the 10 validation images"
        assert row["eval/class_preservation"] * 24 == pytest.approx(round(row["eval/class_preservation"] * 24))

    (cached,) = cache_folder().glob("cnn-*.pt")
    b = load_lab(CYCLEGAN_PLUGINS).registry.dataset_factory("shape-pairs")(data_dir, None).b
    assert cached == cache_path(b), "the judge is trained on domain B's training images"
    assert not any(data_dir.glob("**/*.pt")), "nothing is written beside the data"

    config = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert re.fullmatch(r"[0-9a-f]{64}", config["classifier_sha256"] or ""), config
    assert config["classifier_sha256"] == file_sha256(cached)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["key_metric"] == "val/class_preservation"
    assert summary["best"] == max(row["val/class_preservation"] for row in evals)
    assert (run / "checkpoints" / "best.pt").is_file()


# ------------------------------------------------------------------ exact resume


def test_cyclegan_stopped_and_resumed_logs_what_the_straight_run_logs(capsys, shape_pairs: str,
                                                                       monkeypatch) -> None:
    common = ["--steps", "8", "--eval-interval", "2", "--log-interval", "1", "--seed", "7"]
    straight = train(capsys, shape_pairs, "straight", *common)
    monkeypatch.setenv("LAB_TEST_STOP_AT", "4")  # the local plugin stops the run there, as Ctrl-C would
    code, err = lab(capsys, "train", "cyclegan", "--data", shape_pairs, *TINY, *common, "--name", "split")
    assert code == 130, err
    split = runs_dir() / "split"
    assert json.loads((split / "summary.json").read_text())["global_step"] == 4
    monkeypatch.delenv("LAB_TEST_STOP_AT")
    ok(capsys, "resume", str(split))

    rows = read_jsonl(straight / "metrics.jsonl")
    assert [row["global_step"] for row in rows if "val/class_preservation" in row] == [2, 4, 6, 8]
    assert len({row["train/lr"] for row in rows if "train/lr" in row}) > 1, "the decay is part of the comparison"
    assert comparable(read_jsonl(split / "metrics.jsonl")) == comparable(rows)
    states = [load_checkpoint(run / "checkpoints" / "latest.pt")["algorithm"] for run in (straight, split)]
    for nets, other in zip(states[0]["nets"], states[1]["nets"], strict=True):
        assert all(torch.equal(nets[k], other[k]) for k in nets)
    for pool, other in zip(states[0]["pools"], states[1]["pools"], strict=True):
        assert pool["count"] == other["count"] == 4 and torch.equal(pool["images"], other["images"])
    summaries = [json.loads((run / "summary.json").read_text()) for run in (straight, split)]
    assert (summaries[0]["best"], summaries[0]["best_step"]) == (summaries[1]["best"], summaries[1]["best_step"])


def test_extending_a_finished_run_keeps_its_schedule_at_the_final_value(capsys, shape_pairs: str) -> None:
    """Schedules belong to the budget a run was created with (lab/schedules.py): `lab resume
    --steps N` past it continues at the schedule's end, here a learning rate of 0."""
    split = train(capsys, shape_pairs, "split", "--eval-interval", "2", "--log-interval", "2", "--seed", "7",
                  "--steps", "4")
    ok(capsys, "resume", str(split), "--steps", "8")
    lrs = {row["global_step"]: row["train/lr"] for row in read_jsonl(split / "metrics.jsonl") if "train/lr" in row}
    assert lrs[2] > 0 and lrs[6] == lrs[8] == 0


# ------------------------------------------------------------------ lab sample --input


def write_inputs(folder: Path) -> list[str]:
    """Images to translate: the model's size, a larger one, a colour JPEG, and a file that is no image."""
    rng = np.random.default_rng(5)
    folder.mkdir()
    cv2.imwrite(str(folder / "bar.png"), shape_image(rng, 0))
    cv2.imwrite(str(folder / "big.png"), shape_image(rng, 1, size=24))
    cv2.imwrite(str(folder / "colour.jpg"), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "square.bmp"), shape_image(rng, 2))
    (folder / "notes.txt").write_text("not an image")
    return ["bar", "big", "colour", "square"]


def test_lab_sample_translates_a_folder_both_ways(capsys, shape_pairs: str, tmp_path: Path) -> None:
    run = train(capsys, shape_pairs, "t", "--steps", "2")
    stems = write_inputs(tmp_path / "in")
    ok(capsys, "sample", str(run), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{s}.png" for s in stems]
    ok(capsys, "sample", str(run), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "back"),
       "--direction", "b2a")
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [f"{s}.png" for s in stems]

    model = lab_package.load(run)  # best.pt, as lab sample
    try:
        paths, images = read_folder(tmp_path / "in", model.image_shape)
        assert [p.stem for p in paths] == stems and images.shape == (4, 1, SIZE, SIZE)
        for folder, direction in (("out", "a2b"), ("back", "b2a")):
            expected = model.translate(images, direction)
            for stem, image in zip(stems, expected, strict=True):
                picture = read_png(tmp_path / folder / f"{stem}.png")
                assert picture.shape == (SIZE, SIZE) and picture.dtype == np.uint8, "the model's grayscale size"
                assert np.array_equal(picture, image[0].numpy()), (folder, stem)
    finally:
        model.close()
    a2b = np.stack([read_png(tmp_path / "out" / f"{s}.png") for s in stems])
    b2a = np.stack([read_png(tmp_path / "back" / f"{s}.png") for s in stems])
    assert not np.array_equal(a2b, b2a), "two generators"
    assert a2b.std() > 0


def test_lab_sample_on_a_cyclegan_refuses_mistakes(capsys, shape_pairs: str, tmp_path: Path) -> None:
    run = str(train(capsys, shape_pairs, "m", "--steps", "2"))
    source = tmp_path / "in"
    write_inputs(source)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    one_line_error(capsys, ["sample", run, "--input", str(source), "--out", str(source)], "--out must differ")
    one_line_error(capsys, ["sample", run, "--input", str(source), "--out", str(source / "." / ".." / "in")],
                   "--out must differ")
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before, "the originals are untouched"

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    one_line_error(capsys, ["sample", run, "--input", str(empty), "--out", str(tmp_path / "o1")], "holds no images")
    one_line_error(capsys, ["sample", run, "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")],
                   "is not a folder")
    one_line_error(capsys, ["sample", run, "--direction", "b2a", "--out", str(tmp_path / "o3")], "--direction",
                   "--input")
    one_line_error(capsys, ["sample", run, "--input", str(source), "--direction", "sideways",
                            "--out", str(tmp_path / "o4")], "sideways")
    one_line_error(capsys, ["sample", run, "--n", "4", "--out", "grid.png"], "translates images rather than sampling",
                   "--input")
    assert not Path("grid.png").exists() and not Path("samples.png").exists()
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5)), "no output folder made for a mistake"


def test_lab_sample_translates_with_an_unlabelled_folder_run_from_latest(capsys, unpaired: Path,
                                                                        tmp_path: Path) -> None:
    run = train(capsys, f"image-folder:{unpaired}", "f", "--image-size", str(SIZE), "--steps", "2")
    stems = write_inputs(tmp_path / "in")
    ok(capsys, "sample", str(run), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
       "--checkpoint", "latest")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{s}.png" for s in stems]
    assert all(read_png(tmp_path / "out" / f"{s}.png").shape == (SIZE, SIZE) for s in stems)


def test_lab_sample_translates_with_an_unlabelled_folder_run_by_default(capsys, unpaired: Path,
                                                                        tmp_path: Path) -> None:
    run = train(capsys, f"image-folder:{unpaired}", "f", "--image-size", str(SIZE), "--steps", "2")
    stems = write_inputs(tmp_path / "in")
    ok(capsys, "sample", str(run), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{s}.png" for s in stems]


# ------------------------------------------------------------------ bad input


def test_cyclegan_on_a_single_domain_folder_is_one_line(capsys, tmp_path: Path) -> None:
    classes = write_classes(tmp_path / "classes")
    one_line_error(capsys, ["train", "cyclegan", "--data", f"image-folder:{classes}", *TINY, "--image-size",
                            str(SIZE), "--steps", "2"], "two unpaired domains", "trainA/")
    assert not list(runs_dir().glob("*")), "a mistake found before training leaves no run behind"


@pytest.mark.parametrize("flags, expected", [
    (["--decay-fraction", "2"], "--decay-fraction must be in [0, 1], got 2"),
    (["--lambda-cycle", "-1"], "--lambda-cycle must be >= 0, got -1"),
    (["--pool-size", "-3"], "--pool-size must be >= 0"),
    (["--g-width", "0"], "--g-width must be positive"),
    (["--validation-size", "40"], "--validation-size 40 must be smaller than the 40 training images of domain A"),
    (["--image-size", "18"], "multiples of 4"),
])
def test_bad_cyclegan_settings_are_one_line(capsys, unpaired: Path, flags: list[str], expected: str) -> None:
    defaults = [*TINY, "--image-size", str(SIZE), "--steps", "2"]  # flags given later win
    one_line_error(capsys, ["train", "cyclegan", "--data", f"image-folder:{unpaired}", *defaults, *flags], expected)
    assert not list(runs_dir().glob("*"))
