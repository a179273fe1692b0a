"""What every generator shares: the base class, sample grids, Frechet distances, folders in and out.

A generator plugin subclasses `ImageGenerator`, implements `sample(n)` (and `translate` for
image-to-image models) and its learning step; this module turns samples into PNG grids and
measures them. The Frechet distance is computed in whatever feature space the plugin hands
in (the lab's own MNIST classifier: no Inception weights can be downloaded here), so the
core knows no classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from lab.algorithm import Algorithm
from lab.run.atomic import atomic_write
from lab.datasets import ImageDataset, UnpairedImageDataset, split_validation
from lab.errors import LabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
Features = Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, C, H, W) -> float (N, D)


class ImageGenerator(Algorithm):
    """A model that makes images. `sample(n)` returns uint8 (n, C, H, W) on the CPU."""

    kind = "generator"
    media_each_evaluation = True  # a sample grid every epoch shows training progress

    def sample(self, n: int) -> torch.Tensor:
        raise LabError(f"{self.name} translates images rather than sampling them; use `lab sample RUN --input DIR`")

    def translate(self, images: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """uint8 (N, C, H, W) images of one domain -> the same images rendered in the other."""
        raise LabError(f"{self.name} samples images rather than translating them; use `lab sample RUN --n N`")

    shape: tuple[int, int, int]  # (C, H, W) of the images it makes, set from its data

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shape

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_data)

    def load_images(self, unpaired: bool = False) -> ImageDataset | UnpairedImageDataset:
        """The run's dataset, resized by --image-size, of the kind this model learns from."""
        size = self.config.image_size
        data = self.ctx.load_dataset(**({} if size is None else {"image_size": size}))
        if unpaired and not isinstance(data, UnpairedImageDataset):
            raise LabError(f"{self.name} needs two unpaired domains: a folder with trainA/ trainB/ testA/ testB/ "
                           f"(--data image-folder:PATH) or mnist-styles; {self.ctx.data} is one image set")
        if not unpaired and not isinstance(data, ImageDataset):
            raise LabError(f"{self.name} learns one image distribution; {self.ctx.data} has two domains "
                           "(that is cyclegan's data)")
        return data

    def validation_rows(self, data: ImageDataset, called: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(training rows, held-out rows) of `data`'s training split; best.pt is chosen on the held-out ones."""
        size = self.config.validation_size
        if size >= len(data.train_images):
            raise LabError(f"--validation-size {size} must be smaller than the {len(data.train_images)} "
                           f"training images of {called or data.name}")
        return split_validation(len(data.train_images), size)


# ------------------------------------------------------------------ pixels

def to_uint8(images: torch.Tensor, low: float = 0.0) -> torch.Tensor:
    """Float images in [low, 1] (low is 0 or -1) -> uint8 0..255 on the CPU."""
    unit = (images.detach().float() - low) / (1.0 - low)
    return unit.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def grid(images: torch.Tensor, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (rows*H', columns*W', C) picture with gaps between images."""
    n, c, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    canvas = np.full((pad + rows * (h + pad), pad + columns * (w + pad), c), 64, dtype=np.uint8)
    pictures = images.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        canvas[top : top + h, left : left + w] = pictures[i]
    return canvas


def write_png(picture: np.ndarray, path: Path) -> Path:
    """An (H, W, C) uint8 RGB or grey picture as a PNG, written atomically."""
    bgr = picture[..., ::-1] if picture.shape[-1] == 3 else picture
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise LabError(f"could not encode a PNG for {path}")
    atomic_write(path, lambda handle: handle.write(encoded.tobytes()))
    return path


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None) -> Path:
    return write_png(grid(images, columns), path)


def read_folder(folder: Path, shape: tuple[int, int, int]) -> tuple[list[Path], torch.Tensor]:
    """Every image in `folder` (not recursive), fitted to `shape`: (paths, uint8 (N, C, H, W))."""
    if not folder.is_dir():
        raise LabError(f"--input '{folder}' is not a folder; pass a folder of images to translate")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise LabError(f"--input '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    channels, height, width = shape
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    images = []
    for path in paths:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flag)
        if image is None:
            raise LabError(f"cannot decode image {path}; remove it or replace it with a valid image file")
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        image = image[..., None] if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    return paths, torch.stack(images)


def translate_folder(model: ImageGenerator, source: Path, out: Path, direction: str, batch: int = 256) -> int:
    """`lab sample RUN --input DIR --out DIR`: translate each image, keep its name; returns the count."""
    paths, images = read_folder(source, model.image_shape)
    if out.resolve() == source.resolve():
        raise LabError("--out must differ from --input: translating in place would overwrite the originals")
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(images), batch):
        translated = model.translate(images[start : start + batch], direction)
        for path, image in zip(paths[start : start + batch], translated):
            write_png(image.permute(1, 2, 0).numpy(), out / f"{path.stem}.png")
    return len(paths)


# ------------------------------------------------------------------ Frechet distance

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
    """Feature statistics of a set of real images, computed once; `distance(images)` to them.

    Log a floor beside every distance: the same distance between two sets of real images
    (train vs test) is what a perfect generator would score with this many images.
    """

    def __init__(self, features: Features, real: torch.Tensor) -> None:
        self.features = features
        self.stats = self.stats_of(real)

    def stats_of(self, images: torch.Tensor) -> FeatureStats:
        return feature_stats(batched_features(self.features, images))

    def distance(self, images: torch.Tensor | FeatureStats) -> float:
        other = images if isinstance(images, FeatureStats) else self.stats_of(images)
        return frechet_distance(other, self.stats)
