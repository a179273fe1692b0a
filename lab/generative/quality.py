"""How good a generator's images are, against the real ones, in a classifier's features.

`SampleQuality` holds the real images' features (computed once per process) and gives, for a
batch of generated images, every sample metric the generators log: the Frechet distance to
the held-out training images (`val/fld`, which chooses best.pt) and to the test images
(`eval/fld`, beside its floor `eval/fld_floor`: real training against real test images), the
kernel distance (`eval/kid`, `eval/kid_std`) and precision/recall (`eval/precision`,
`eval/recall`). The classifier is the lab's reference `cnn` for the data
(`lab.generative.reference`), or a run of the user's.
"""

from __future__ import annotations

import torch

from lab.datasets import ImageDataset
from lab.generative.feature_metrics import kernel_distance, precision_recall
from lab.generative.frechet import FrechetReference, feature_stats
from lab.generative.reference import reference_classifier


class SampleQuality:
    """The real images' features and the metrics of generated images against them."""

    def __init__(self, data: ImageDataset, device: torch.device, val_rows: torch.Tensor,
                 classifier: str | None = None, classifier_sha256: str | None = None, measures: str = "") -> None:
        model, self.classifier_sha256 = reference_classifier(data, device, classifier, classifier_sha256,
                                                             measures=measures)
        features = lambda images: model(images.to(device))[0]  # noqa: E731
        self.test = FrechetReference(features, data.test_images)
        self.val = FrechetReference(features, data.train_images[val_rows])
        self.floor = self.test.distance(data.train_images[: len(data.test_images)])

    def metrics(self, images: torch.Tensor) -> dict[str, float]:
        """Every metric of `images` (uint8, N >= 2), one feature pass."""
        features = self.test.features_of(images)
        stats = feature_stats(features)
        kid, kid_std = kernel_distance(self.test.real, features)
        precision, recall = precision_recall(self.test.real, features)
        return {"val/fld": self.val.distance(stats), "eval/fld": self.test.distance(stats),
                "eval/fld_floor": self.floor, "eval/kid": kid, "eval/kid_std": kid_std,
                "eval/precision": precision, "eval/recall": recall}
