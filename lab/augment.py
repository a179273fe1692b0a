"""Image augmentation on the device, for agents and supervised baselines alike.

Each function takes a batch (B, C, H, W) and a torch generator, one of the run's named
random streams (`ctx.generator("augment")`): the runner saves and restores it with the
checkpoint, so a resumed run draws the very shifts the uninterrupted one draws. Every
augmentation is one batched op on the batch's device (a gather, a grid_sample), never a
Python loop over samples; the random numbers are drawn on the generator's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ's random shift (Kostrikov et al. 2020): pad by `pad` pixels repeating the border
    (PyTorch's ReplicationPad2d), then crop back to (H, W) at a random offset per sample,
    the same for every channel (a frame stack moves as one).

    Written as one gather with clamped source indices, which is exactly pad-then-crop for
    integer shifts: any dtype (Atari's uint8 frames stay uint8, a quarter of the bytes), no
    padded copy, no interpolation.
    """
    n, c, h, w = images.shape
    shifts = torch.randint(-pad, pad + 1, (2, n, 1), generator=generator, device=generator.device)
    shifts = shifts.to(images.device)
    rows = (torch.arange(h, device=images.device) + shifts[0]).clamp_(0, h - 1)  # (n, h)
    cols = (torch.arange(w, device=images.device) + shifts[1]).clamp_(0, w - 1)  # (n, w)
    index = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).view(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def random_intensity(images: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """SPR's intensity augmentation (Schwarzer et al. 2021), which Dopamine's DrQ applies
    after the shift: each sample scaled by 1 + scale * clip(N(0, 1), -2, 2), one factor for
    all its channels and pixels. Returns floats on the input's scale (uint8 frames stay in
    0-255 before the network divides them)."""
    noise = torch.randn(images.shape[0], 1, 1, 1, generator=generator, device=generator.device)
    return images.float() * (1.0 + scale * noise.clamp_(-2.0, 2.0)).to(images.device)


def random_rotation(images: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each float image by its own angle, uniform in [-degrees, degrees], about the
    centre (bilinear, zeros outside): one affine_grid + grid_sample for the whole batch."""
    n, _, h, w = images.shape
    angles = torch.rand(n, generator=generator, device=generator.device).to(images.device)
    angles = (angles * 2 - 1) * math.radians(degrees)
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    # a rotation in pixels, written in affine_grid's coordinates ([-1, 1] on each axis)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
