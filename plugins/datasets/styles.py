"""Rendering styles for MNIST digits: the two domains of the `mnist-styles` CycleGAN task.

Each style is a deterministic uint8 -> uint8 image transform that keeps the digit's
identity, so a translator can be scored by whether a classifier still reads the same digit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Style = Callable[[torch.Tensor], torch.Tensor]


def plain(images: torch.Tensor) -> torch.Tensor:
    """The digits as scanned."""
    return images


def thick(images: torch.Tensor) -> torch.Tensor:
    """Strokes dilated by one pixel on each side (3x3 max filter)."""
    return F.max_pool2d(images.float(), 3, stride=1, padding=1).to(torch.uint8)


def thin(images: torch.Tensor) -> torch.Tensor:
    """Strokes eroded with a 2x2 min filter: about one pixel thinner, rarely broken."""
    padded = F.pad(images.float(), (0, 1, 0, 1))
    return (-F.max_pool2d(-padded, 2, stride=1)).to(torch.uint8)


def inverted(images: torch.Tensor) -> torch.Tensor:
    """Dark ink on a light background."""
    return 255 - images


def italic(images: torch.Tensor, shear: float = 0.3) -> torch.Tensor:
    """Slanted to the right by `shear` (x shifts by shear * y), bilinear resampling."""
    n = images.shape[0]
    theta = torch.tensor([[1.0, shear, 0.0], [0.0, 1.0, 0.0]]).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


STYLES: dict[str, Style] = {
    "plain": plain,
    "thick": thick,
    "thin": thin,
    "inverted": inverted,
    "italic": italic,
}
DEFAULT_PAIR = "thin-thick"


def apply(style: Style, images: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Apply in chunks so float intermediates stay small for 60k images."""
    return torch.cat([style(images[i : i + chunk]) for i in range(0, images.shape[0], chunk)]) if len(images) else images


def halves(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random index sets covering 0..n-1 (fixed seed: same task every run)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = math.ceil(n / 2)
    return perm[:half].sort().values, perm[half:].sort().values
