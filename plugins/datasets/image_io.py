"""Decoding and resizing single images with OpenCV (no torchvision in the lab)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from lab.api import LabError


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to `size` (area filter down, bilinear up), centre-crop square."""
    height, width = image.shape[:2]
    if height == width == size:
        return image
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8, (H, W) if stored grayscale else (H, W, 3) RGB, fitted to size x size."""
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise LabError(f"cannot decode image {path}; remove it or replace it with a valid image file")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return fit_square(image, size)


def resize_stack(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 (N, C, H, W) fitted to (N, C, size, size); unchanged when size is None or already right."""
    if size is None or images.shape[-2] == images.shape[-1] == size:
        return images
    if int(size) < 1:
        raise LabError(f"image_size must be a positive number of pixels, got {size}")
    n, c, h, w = images.shape
    planes = images.reshape(n * c, h, w).numpy()
    out = np.stack([fit_square(plane, int(size)) for plane in planes]) if n * c else np.empty((0, size, size), np.uint8)
    return torch.from_numpy(out).reshape(n, c, int(size), int(size))
