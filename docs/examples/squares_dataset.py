"""`squares`: a labelled image dataset made on the spot, for trying plugins without files.

Each image is 1x16x16: a bright 6x6 square in one of the four quadrants (the class), moved
by up to two pixels, on a noisy background. `--data squares` makes 2,000 training and 500
test images; `--data squares:N` makes N training images (and N / 4 test images).

    lab train svm --data squares --plugins-dir docs/examples
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lab.api import ImageDataset, LabError, hookimpl

CLASSES = ["top-left", "top-right", "bottom-left", "bottom-right"]


def draw(count: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` uint8 images (count, 1, size, size) and their int64 labels."""
    labels = torch.randint(0, 4, (count,), generator=generator)
    images = torch.randint(0, 80, (count, 1, size, size), generator=generator, dtype=torch.uint8)
    side, half = 3 * size // 8, size // 2
    shift = torch.randint(-2, 3, (count, 2), generator=generator)
    for i, (label, (dy, dx)) in enumerate(zip(labels.tolist(), shift.tolist(), strict=True)):
        top = (label // 2) * half + (half - side) // 2 + dy
        left = (label % 2) * half + (half - side) // 2 + dx
        images[i, 0, max(top, 0) : top + side, max(left, 0) : left + side] = 220
    return images, labels


def squares(data_dir: Path, arg: str | None = None, **options: Any) -> ImageDataset:
    """`ctx.load_dataset()` calls this with the run's data folder (unused: nothing to read),
    the text after `squares:` and the algorithm's options (`image_size`)."""
    unknown = set(options) - {"image_size"}
    if unknown:
        raise LabError(f"squares takes the option image_size, not {', '.join(sorted(unknown))}")
    try:
        count = int(arg) if arg else 2000
    except ValueError:
        raise LabError(f"--data squares:N takes a number of training images, got 'squares:{arg}'") from None
    if count < 8:
        raise LabError(f"--data squares:{count}: make at least 8 training images")
    size = options.get("image_size") or 16
    generator = torch.Generator().manual_seed(0)  # the same images in every run: data, not noise
    train_images, train_labels = draw(count, size, generator)
    test_images, test_labels = draw(max(count // 4, 2), size, generator)
    return ImageDataset("squares", train_images, train_labels, test_images, test_labels, classes=CLASSES)


@hookimpl
def register_datasets(register) -> None:
    register("squares", squares, description="1x16x16 squares in one of four quadrants (made, not read)")
