"""How good a generator's images are, against the real ones, in a classifier's features.

`SampleQuality` holds the real images' features (computed once per process) and gives, for a
batch of generated images, every sample metric the generators log: the Frechet distance to
the held-out training images (`val/fld`, which chooses best.pt) and to the test images
(`eval/fld`, beside its floor `eval/fld_floor`: real training against real test images), the
kernel distance (`eval/kid`, `eval/kid_std`) and precision/recall (`eval/precision`,
`eval/recall`). The classifier is the lab's reference `cnn` for the data
(`lab.generative.reference`), or a run of the user's.

`SampledImageGenerator` is the base of the generators measured by their samples (`gan`,
`diffusion`, `vae`), with `SampleQualityConfig` the base of their settings; `cyclegan`
measures its translations into domain B with a `SampleQuality` of B (no held-out split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lab.api import Context, ImageDataset, check_ranges, option
from lab.generative.base import ImageGenerator
from lab.generative.feature_metrics import NEIGHBOURS, kernel_distance, precision_recall
from lab.generative.frechet import FrechetReference, feature_stats
from lab.generative.reference import reference_classifier


class SampleQuality:
    """The real images' features and the metrics of generated images against them."""

    def __init__(self, data: ImageDataset, ctx: Context, val_rows: torch.Tensor | None,
                 classifier: str | None = None, classifier_sha256: str | None = None, measures: str = "") -> None:
        self.classifier, self.classifier_sha256 = reference_classifier(data, ctx, classifier, classifier_sha256,
                                                                       measures=measures)

        def features(images: torch.Tensor) -> torch.Tensor:
            ctx.check_stop()  # thousands of images a batch at a time: a stop ends it within seconds
            return self.classifier(images.to(ctx.device))[0]

        self.test = FrechetReference(features, data.test_images)
        self.val = None if val_rows is None else FrechetReference(features, data.train_images[val_rows])
        self.floor = self.test.distance(data.train_images[: len(data.test_images)])

    def metrics(self, images: torch.Tensor) -> dict[str, float]:
        """Every metric of `images` (uint8, more than `NEIGHBOURS` of them), one feature pass;
        `val/fld` only where held-out rows were given."""
        features = self.test.features_of(images)
        stats = feature_stats(features)
        kid, kid_std = kernel_distance(self.test.real, features)
        precision, recall = precision_recall(self.test.real, features)
        held_out = {} if self.val is None else {"val/fld": self.val.distance(stats)}
        return {**held_out, "eval/fld": self.test.distance(stats), "eval/fld_floor": self.floor,
                "eval/kid": kid, "eval/kid_std": kid_std, "eval/precision": precision, "eval/recall": recall}


def has_yardstick(data: ImageDataset, classifier: str | None) -> bool:
    """Whether `data`'s images can be measured: a classifier run was given, or the data has
    the labels the reference cnn is trained on."""
    return classifier is not None or data.train_labels is not None


@dataclass
class SampleQualityConfig:
    """The settings every generator measured by `SampleQuality` shares: the base of its Config."""

    validation_size: int = option(5000, "training images held out to choose best.pt")
    fld_samples: int = option(10000, "generated images per evaluation (FLD, KID, precision/recall)")
    classifier: str | None = option(None, "RUN_DIR of a cnn/mlp run for eval/fld (default: the lab's cached cnn)")
    classifier_sha256: str | None = option(None, "filled in by the run: the classifier file's hash")
    image_size: int | None = option(None, "resize images to this square size")

    def __post_init__(self) -> None:
        check_ranges(self, positive=("validation_size",))
        if self.fld_samples <= NEIGHBOURS:
            raise ValueError(f"--fld-samples must be at least {NEIGHBOURS + 1} (precision and recall look at "
                             f"{NEIGHBOURS} neighbours)")


class SampledImageGenerator(ImageGenerator):
    """A generator measured by its samples: `evaluate` draws `config.fld_samples` images and
    scores them with `SampleQuality`. The subclass's Config subclasses `SampleQualityConfig`;
    its `__init__` sets `self.data` (the `ImageDataset`) and `self.val_rows` (the held-out
    training rows), then calls `sample_quality()` when `ctx.training`, so config.yaml records
    the classifier's hash and bad data fails before training."""

    quality: SampleQuality | None = None
    data: ImageDataset
    val_rows: torch.Tensor

    def sample_quality(self) -> SampleQuality:
        """The classifier and the real images' features, once per process (at set-up when
        training; at the first evaluation under `lab eval`, so `lab sample` needs no classifier)."""
        if self.quality is None:
            cfg = self.config
            self.quality = SampleQuality(self.data, self.ctx, self.val_rows, cfg.classifier,
                                         cfg.classifier_sha256, measures="its eval/fld")
            cfg.classifier_sha256 = self.quality.classifier_sha256
        return self.quality

    def evaluate(self) -> dict[str, Any]:
        """`config.fld_samples` new images, scored by `SampleQuality.metrics`."""
        return self.sample_quality().metrics(self.sample(self.config.fld_samples))
