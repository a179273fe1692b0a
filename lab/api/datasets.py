"""Dataset containers handed out by `ctx.load_dataset`.

Images are kept as uint8 (N, C, H, W) CPU tensors: the shared data buffer moves them to
the training device once and does shuffling, augmentation and normalisation there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageDataset:
    """One image set with a train and a test split, as uint8 (N, C, H, W) CPU tensors.

    `train_labels` / `test_labels` are int64 (N,) class indices, or None for unlabelled
    images; `classes` names the classes (index i is `classes[i]`), empty when unlabelled.
    `name` is what runs and media call the data.
    """

    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor | None  # int64 (N,), None when unlabelled
    test_images: torch.Tensor
    test_labels: torch.Tensor | None
    classes: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        channels, height, width = self.train_images.shape[1:]
        return channels, height, width


@dataclass
class UnpairedImageDataset:
    """Two image domains without pairing (CycleGAN): labels, if any, are for evaluation only."""

    name: str
    a: ImageDataset
    b: ImageDataset


def split_validation(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, validation rows): `size` rows chosen at random with a fixed seed, the
    same for every run and seed, so the split mixes all classes even where a dataset stores
    them in order (image folders do, class by class)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    return order[size:].sort().values, order[:size].sort().values
