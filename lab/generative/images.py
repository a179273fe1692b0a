"""Pixels in and out for generators: uint8 conversion, sample grids as PNG, image folders
(`lab sample RUN --input DIR`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from lab.api import LabError
from lab.atomic import atomic_write
from lab.files import INSTEAD, make_folder

if TYPE_CHECKING:
    from lab.generative.base import ImageGenerator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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


def write_png(picture: np.ndarray, path: Path, refused: tuple[str, str] = ("write image", INSTEAD)) -> Path:
    """An (H, W, C) uint8 RGB or grey picture as a PNG, written atomically; `refused`: how a
    file system that refuses it is worded (`lab.files`: what was being done, how to write elsewhere)."""
    bgr = picture[..., ::-1] if picture.shape[-1] == 3 else picture
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise LabError(f"could not encode a PNG for {path}")
    atomic_write(path, lambda handle: handle.write(encoded.tobytes()), *refused)
    return path


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None,
              refused: tuple[str, str] = ("write image", INSTEAD)) -> Path:
    return write_png(grid(images, columns), path, refused)


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
    refused = ("write the translated image", "choose another --out")
    make_folder(out, "create the output folder", refused[1], parents=False)  # its parent must exist, as for mkdir
    for start in range(0, len(images), batch):
        translated = model.translate(images[start : start + batch], direction)
        for path, image in zip(paths[start : start + batch], translated, strict=True):
            write_png(image.permute(1, 2, 0).numpy(), out / f"{path.stem}.png", refused)
    return len(paths)
