"""Decode a folder of images once into uint8 tensors, in one of four layouts.

  ROOT/trainA ROOT/trainB ROOT/testA ROOT/testB   unpaired two-domain (CycleGAN)
  ROOT/train/CLASS/*  ROOT/test/CLASS/* (or val/)  labelled, split given
  ROOT/CLASS/*                                     labelled, test split drawn here
  ROOT/*                                           unlabelled, test split drawn here

Every image is resized (shorter side to `image_size`, then centre-cropped square) so the
whole set stacks into one (N, C, H, W) tensor the data buffer can move to the device.
Decoding runs on a thread pool (OpenCV releases the GIL).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from lab.api import ImageDataset, LabError, UnpairedImageDataset
from lab.plugins.datasets.image_io import decode

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"})
UNPAIRED_DIRS = ("trainA", "trainB", "testA", "testB")
LAYOUTS_HELP = (
    "expected trainA/ trainB/ testA/ testB/ (unpaired), train/CLASS/ + test/CLASS/, CLASS/ sub-folders, "
    "or images directly in the folder"
)


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder` (none if it is missing), sorted so the order is reproducible."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(C, H, W) with exactly `channels` (1 or 3) channels."""
    if image.ndim == 2:
        image = image[:, :, None] if channels == 1 else np.repeat(image[:, :, None], 3, axis=2)
    elif channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return image.transpose(2, 0, 1)


def decode_many(paths: list[Path], size: int) -> list[np.ndarray]:
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: decode(p, size), paths))


def stack(images: list[np.ndarray], channels: int, size: int) -> torch.Tensor:
    if not images:
        return torch.empty((0, channels, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack([to_channels(im, channels) for im in images]))


def resolve_channels(channels: int | str, decoded: list[np.ndarray]) -> int:
    """'auto' means 1 when every image is stored grayscale, else 3."""
    if channels == "auto":
        return 1 if all(im.ndim == 2 for im in decoded) else 3
    return int(channels)


class FolderReader:
    """Decodes groups of files with one size and one channel count across all groups."""

    def __init__(self, size: int, channels: int | str) -> None:
        if int(size) < 1:
            raise LabError(f"image_size must be a positive number of pixels, got {size}")
        if str(channels) not in ("1", "3", "auto"):
            raise LabError(f"channels must be 1, 3 or auto, got {channels!r}")
        self.size = int(size)
        self.channels = channels

    def read(self, groups: list[list[Path]]) -> list[torch.Tensor]:
        decoded = [decode_many(paths, self.size) for paths in groups]
        channels = resolve_channels(self.channels, [im for group in decoded for im in group])
        return [stack(group, channels, self.size) for group in decoded]


def split_indices(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed (seed 0) train/test split, so every run of a folder sees the same test set."""
    if not 0.0 < test_fraction < 1.0:
        raise LabError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = min(n - 1, max(1, round(n * test_fraction))) if n > 1 else 0
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def labelled_files(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = image_files(folder / name)
        files += found
        labels += [index] * len(found)
    return files, labels


def load_unpaired(root: Path, reader: FolderReader) -> UnpairedImageDataset:
    groups = [image_files(root / d) for d in UNPAIRED_DIRS]
    for name, files in zip(UNPAIRED_DIRS, groups, strict=True):
        if not files:
            raise LabError(f"{root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    train_a, train_b, test_a, test_b = reader.read(groups)
    name = f"image-folder:{root.name}"
    return UnpairedImageDataset(
        name,
        ImageDataset(f"{name}/A", train_a, None, test_a, None),
        ImageDataset(f"{name}/B", train_b, None, test_b, None),
    )


def load_split_classes(root: Path, test_dir: Path, reader: FolderReader) -> ImageDataset:
    classes = [d.name for d in subdirs(root / "train")]
    extra = sorted({d.name for d in subdirs(test_dir)} - set(classes))
    if extra:
        raise LabError(f"{test_dir} has classes missing from {root / 'train'}: {', '.join(extra)}")
    train_files, train_labels = labelled_files(root / "train", classes)
    test_files, test_labels = labelled_files(test_dir, classes)
    if not train_files or not test_files:
        raise LabError(f"{root}: train/ and {test_dir.name}/ must both hold images in class sub-folders")
    train, test = reader.read([train_files, test_files])
    return ImageDataset(
        f"image-folder:{root.name}", train, torch.tensor(train_labels), test, torch.tensor(test_labels), classes
    )


def load_and_split(root: Path, reader: FolderReader, test_fraction: float) -> ImageDataset:
    """CLASS/ sub-folders (labelled) or loose images (unlabelled), split here."""
    classes = [d.name for d in subdirs(root) if image_files(d)]
    if classes:
        files, label_list = labelled_files(root, classes)
        labels: torch.Tensor | None = torch.tensor(label_list)
    else:
        files, labels = image_files(root), None
    if len(files) < 2:
        raise LabError(f"{root} holds {len(files)} image(s); {LAYOUTS_HELP}")
    (images,) = reader.read([files])
    train_idx, test_idx = split_indices(len(files), test_fraction)
    train_labels = labels[train_idx] if labels is not None else None
    test_labels = labels[test_idx] if labels is not None else None
    return ImageDataset(
        f"image-folder:{root.name}", images[train_idx], train_labels, images[test_idx], test_labels, classes
    )


def load_image_folder(
    root: Path, image_size: int = 64, channels: int | str = "auto", test_fraction: float = 0.1
) -> ImageDataset | UnpairedImageDataset:
    """Detect the layout of `root` and decode it."""
    if not root.is_dir():
        raise LabError(f"image folder {root} does not exist or is not a folder")
    reader = FolderReader(image_size, channels)
    names = {d.name for d in subdirs(root)}
    if {"trainA", "trainB"} <= names:
        return load_unpaired(root, reader)
    if "train" in names and names & {"test", "val"}:
        return load_split_classes(root, root / ("test" if "test" in names else "val"), reader)
    return load_and_split(root, reader, test_fraction)
