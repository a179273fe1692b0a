"""The generators' yardstick: a classifier whose features sample metrics are measured in.

No Inception weights can be downloaded here, so Frechet distances (and the class checks of
image-to-image models) are measured in the penultimate features of a small MNIST-grade
convnet: by default one trained once on the run's own data with a fixed recipe and cached
in the user's cache folder (`$LAB_CACHE_DIR/classifiers`, else
`$XDG_CACHE_HOME/arcade-lab/classifiers`, else `~/.cache/arcade-lab/classifiers`: dataset
folders are often shared and read-only), keyed
by a hash of the data and the recipe, so every run on the same data measures in the same
feature space; or any classifier run (`--classifier RUN_DIR`, loaded with `ctx.load_run`).
Each run records the sha256 of the classifier's file and refuses a classifier that changed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from lab.api import Context, ImageDataset, LabError
from lab.atomic import atomic_write
from lab.buffers.data import DataBuffer
from lab.classifiers import ImageClassifier, channel_stats, cnn_body, sgd_or_adamw, training_step
from lab.schedules import warmup_decay
from lab.seeding import preserved_random_state

# The reference cnn's fixed recipe (the `cnn` baseline's defaults when it was fixed: ~99% MNIST
# test accuracy in 2 epochs). It is part of the cache key: a new recipe is a new classifier.
RECIPE = dict(widths=(32, 64, 128), convs_per_block=1, epochs=2, batch_size=128, learning_rate=0.1,
              momentum=0.9, weight_decay=5e-4, warmup=0.05, label_smoothing=0.1, crop_padding=2, seed=0)


class FeatureExtractor(nn.Module):
    """images (uint8 0..255 or float 0..1, N x C x H x W) -> (penultimate features, logits)."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.classifier.input_shape

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.classifier.features(images)
        return features, self.classifier.head(features)


def cache_folder() -> Path:
    """Where reference classifiers are cached: the user's cache directory, never the data's."""
    if os.environ.get("LAB_CACHE_DIR"):
        return Path(os.environ["LAB_CACHE_DIR"]) / "classifiers"
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "arcade-lab" / "classifiers"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference_cnn(shape: tuple[int, ...], classes: list[str], mean: list[float], std: list[float]) -> ImageClassifier:
    body, features = cnn_body(shape, RECIPE["widths"], RECIPE["convs_per_block"])
    return ImageClassifier(body, features, classes, mean, std, shape)


def fit_reference_cnn(images: torch.Tensor, labels: torch.Tensor, classes: list[str],
                      device: torch.device, check_stop: Callable[[], None] = lambda: None) -> ImageClassifier:
    """The reference cnn trained with RECIPE on all of `images` (the caller's random state is
    left alone: the same weights whether a run trains it or finds it cached); `check_stop`
    before every step (`ctx.check_stop`: the run's set-up stops within seconds of a signal)."""
    r = RECIPE
    with preserved_random_state():
        torch.manual_seed(r["seed"])
        model = _reference_cnn(tuple(images.shape[1:]), classes, *channel_stats(images)).to(device)
        data = DataBuffer(images, labels, device, min(r["batch_size"], len(images)), seed=r["seed"], drop_last=True,
                          crop_padding=r["crop_padding"], normalize=None)
        optimizer = sgd_or_adamw(model, "sgd", r["learning_rate"], r["momentum"], r["weight_decay"])
        horizon = r["epochs"] * len(data)
        schedule = warmup_decay(r["learning_rate"], horizon, r["warmup"])
        for step in range(horizon):
            check_stop()
            training_step(model, optimizer, data.next(), schedule(step), r["label_smoothing"])
    return model.eval()


def _from_run(run_dir: str, ctx: Context) -> tuple[ImageClassifier, Path]:
    """A classifier run's model (best.pt, else latest.pt), loaded by the runner."""
    checkpoints = Path(run_dir) / "checkpoints"
    checkpoint = "best" if (checkpoints / "best.pt").is_file() else "latest"
    algo = ctx.load_run(run_dir, checkpoint)
    try:
        model = getattr(algo, "model", None)
        if not isinstance(model, ImageClassifier):
            raise LabError(f"{run_dir} is a '{algo.name}' run; --classifier needs a classifier run "
                           "(logreg, mlp or cnn: `lab train cnn --data ...`)")
    finally:
        algo.close()
    return model.eval(), checkpoints / f"{checkpoint}.pt"


def cache_path(data: ImageDataset) -> Path:
    """The cache file of `data`'s reference cnn: named by a hash of its labelled training split and RECIPE."""
    digest = hashlib.sha256(data.train_images.numpy().tobytes() + data.train_labels.numpy().tobytes()
                            + repr(sorted(RECIPE.items())).encode()).hexdigest()
    return cache_folder() / f"cnn-{digest[:16]}.pt"


def _cached(data: ImageDataset, device: torch.device,
            check_stop: Callable[[], None] = lambda: None) -> tuple[ImageClassifier, Path]:
    """The reference cnn for `data`, trained on its training split once and then read from the cache."""
    if data.train_labels is None:
        raise LabError(f"the reference classifier needs a labelled dataset; {data.name} has no labels")
    classes = data.classes or [str(i) for i in range(int(data.train_labels.max()) + 1)]
    path = cache_path(data)
    if not path.is_file():
        print(f"note: training the reference cnn for {data.name} once ({RECIPE['epochs']} epochs); "
              f"cached at {path}", file=sys.stderr, flush=True)
        model = fit_reference_cnn(data.train_images, data.train_labels, classes, device, check_stop)
        state = {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "classes": classes,
                 "input_shape": list(data.image_shape)}
        atomic_write(path, lambda handle: torch.save({"algo": "cnn", "global_step": 0, "algorithm": state}, handle),
                     "cache the reference classifier as", "set LAB_CACHE_DIR to a writable folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["algorithm"]
        shape = tuple(int(v) for v in state["input_shape"])
        model = _reference_cnn(shape, list(state["classes"]), [0.0] * shape[0], [1.0] * shape[0])
        model.load_state_dict(state["model"])  # brings the trained normalisation buffers too
    except (OSError, EOFError, KeyError, RuntimeError, ValueError, TypeError):
        raise LabError(f"the cached reference classifier {path} is unreadable; delete it and the next run "
                       "trains it again") from None
    return model.to(device).eval(), path


def reference_classifier(data: ImageDataset, ctx: Context, run_dir: str | None = None,
                         expected_sha256: str | None = None, measures: str = "its metrics") -> tuple[FeatureExtractor, str]:
    """(feature extractor, sha256 of the classifier's file) for `data`'s images.

    `run_dir` (a generator's `--classifier`): a classifier run trained on images of this
    shape; else the cached reference cnn. `expected_sha256` (what the run recorded when it
    began): a classifier that has changed since is refused, since `measures` would no
    longer be comparable across the run.
    """
    model, path = _from_run(run_dir, ctx) if run_dir is not None else _cached(data, ctx.device, ctx.check_stop)
    if model.input_shape != data.image_shape:
        raise LabError(f"--classifier {run_dir} was trained on {model.input_shape} images; {data.name} has "
                       f"{data.image_shape}: train one on this data (lab train cnn --data ...)")
    digest = file_sha256(path)
    if expected_sha256 not in (None, digest):
        raise LabError(f"the classifier at {path} changed since this run began (sha256 {digest[:12]} "
                       f"!= {expected_sha256[:12]}): {measures} would not be comparable")
    return FeatureExtractor(model), digest
