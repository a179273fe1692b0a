"""A one-file local plugin for tests/test_cyclegan.py: a small labelled unpaired dataset.

`shape-pairs`: 16x16 grayscale images of three shape classes (horizontal bar, vertical
bar, square) on dark noise. Domain B is the same kind of picture inverted (255 - x), drawn
from other random images (unpaired). Both domains carry labels, which the image-folder
layout trainA/ trainB/ testA/ testB/ cannot, so cyclegan's class preservation is testable.

`on_metrics` requests a stop (as Ctrl-C does) once a run logs step $LAB_TEST_STOP_AT, so a
test can interrupt a run in process at an exact step.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch

from lab.api import ImageDataset, LabError, UnpairedImageDataset, hookimpl

__version__ = "0.0.1"

SIZE = 16
SHAPES = ((2, 10), (10, 2), (6, 6))  # (height, width) of each class's bright shape
COUNTS = {"a_train": 120, "b_train": 256, "a_test": 24, "b_test": 24}


def shapes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (count, 1, SIZE, SIZE) images and their int64 labels (classes in turn)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 40, (count, 1, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    labels = torch.arange(count) % len(SHAPES)
    for i, label in enumerate(labels.tolist()):
        height, width = SHAPES[label]
        top = int(torch.randint(0, SIZE + 1 - height, (), generator=gen))
        left = int(torch.randint(0, SIZE + 1 - width, (), generator=gen))
        images[i, :, top : top + height, left : left + width] = 255
    return images, labels


def domain(name: str, train: int, test: int, seed: int, invert: bool) -> ImageDataset:
    train_images, train_labels = shapes(train, seed)
    test_images, test_labels = shapes(test, seed + 100)
    if invert:
        train_images, test_images = 255 - train_images, 255 - test_images
    return ImageDataset(name, train_images, train_labels, test_images, test_labels, ["hbar", "vbar", "square"])


def shape_pairs(data_dir: Path, arg: str | None, **options) -> UnpairedImageDataset:
    if arg is not None:
        raise LabError(f"shape-pairs has no variant '{arg}'; use --data shape-pairs")
    unknown = set(options) - {"image_size"}
    if unknown or options.get("image_size", SIZE) != SIZE:
        raise LabError(f"shape-pairs has {SIZE}x{SIZE} images and no options; got {options}")
    return UnpairedImageDataset(
        "shape-pairs",
        domain("shape-pairs/A", COUNTS["a_train"], COUNTS["a_test"], seed=1, invert=False),
        domain("shape-pairs/B", COUNTS["b_train"], COUNTS["b_test"], seed=2, invert=True),
    )


@hookimpl
def register_datasets(register) -> None:
    register("shape-pairs", shape_pairs, description="16x16 shapes, B = inverted A, labelled (cyclegan tests)")


@hookimpl
def on_metrics(run, metrics, step) -> None:
    stop_at = os.environ.get("LAB_TEST_STOP_AT")
    if stop_at is not None and step >= int(stop_at):
        from lab.signals import STOP

        if not STOP.requested and STOP.training:
            STOP.signum = signal.SIGINT  # what the handler records for a first Ctrl-C
