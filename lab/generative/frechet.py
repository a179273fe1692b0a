"""Frechet distances between image sets, in whatever feature space the caller hands in (the
lab's reference classifier: `lab.generative.reference`), so the core knows no classifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from lab.api import LabError

Features = Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, C, H, W) -> float (N, D)


class FeatureStats(NamedTuple):
    mean: torch.Tensor  # float64 (D,)
    cov: torch.Tensor  # float64 (D, D)


def feature_stats(features: torch.Tensor) -> FeatureStats:
    x = features.detach().double().cpu()
    if len(x) < 2:
        raise LabError("a Frechet distance needs at least 2 images on each side")
    return FeatureStats(x.mean(0), torch.cov(x.T))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """|mu_a - mu_b|^2 + tr(A + B - 2 (A B)^1/2), the FID formula.

    tr((A B)^1/2) is the sum of the square roots of the eigenvalues of A^1/2 B A^1/2, a
    symmetric matrix, so two `eigh` calls do it in float64 without scipy's sqrtm.
    """
    values, vectors = torch.linalg.eigh(a.cov)
    root = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root @ b.cov @ root).clamp_min(0).sqrt().sum()
    diff = a.mean - b.mean
    return float(diff @ diff + a.cov.trace() + b.cov.trace() - 2 * cross)


@torch.inference_mode()
def batched_features(features: Features, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([features(images[i : i + batch]) for i in range(0, len(images), batch)])


class FrechetReference:
    """The features of a set of real images and their statistics, computed once;
    `distance(images)` to them (and, from `real`, the kernel distance and precision/recall of
    `lab.generative.feature_metrics`).

    Log a floor beside every distance: the same distance between two sets of real images
    (train vs test) is what a perfect generator would score with this many images.
    """

    def __init__(self, features: Features, real: torch.Tensor) -> None:
        self.features = features
        self.real = self.features_of(real)
        self.stats = feature_stats(self.real)

    def features_of(self, images: torch.Tensor) -> torch.Tensor:
        return batched_features(self.features, images)

    def stats_of(self, images: torch.Tensor) -> FeatureStats:
        return feature_stats(self.features_of(images))

    def distance(self, images: torch.Tensor | FeatureStats) -> float:
        other = images if isinstance(images, FeatureStats) else self.stats_of(images)
        return frechet_distance(other, self.stats)
