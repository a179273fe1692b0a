"""`pixels`: the simplest image generator: every pixel an independent Bernoulli variable.

A complete generator plugin: a subclass of `lab.generative.base.ImageGenerator` that
learns by SGD, implements `sample(n)` (which `lab sample` and `lab.load(run).sample(n)`
call) and writes a sample grid after every evaluation.

    lab train pixels --data squares --plugins-dir docs/examples
    lab sample runs/RUN --n 64 --out grid.png --plugins-dir docs/examples
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lab.api import check_ranges, hookimpl, option
from lab.buffers import DataBuffer
from lab.generative.base import ImageGenerator
from lab.generative.images import save_grid


@dataclass
class PixelsConfig:
    batch_size: int = option(128, "training minibatch size")
    learning_rate: float = option(0.05, "Adam learning rate")
    validation_size: int = option(500, "training images held out to choose best.pt")  # validation_rows reads it
    image_size: int | None = option(None, "resize images to this square size")  # load_images reads it

    def __post_init__(self) -> None:
        check_ranges(self, positive=("batch_size", "learning_rate", "validation_size"))


class Pixels(ImageGenerator):
    """Independent Bernoulli pixels: learns the mean image and samples around it."""

    name = "pixels"  # kind = "generator" comes from ImageGenerator
    Config = PixelsConfig
    key_metric, key_metric_mode = "val/nll", "min"  # best.pt: the lowest validation NLL
    default_epochs = 3

    def __init__(self, config: PixelsConfig, ctx) -> None:
        super().__init__(config, ctx)
        data = self.load_images()  # ctx.load_dataset(), resized by --image-size
        self.shape = data.image_shape  # (C, H, W) of the images sample() makes
        train, val = self.validation_rows(data)
        # ImageGenerator.steps_per_epoch counts the batches of self.train_data
        self.train_data = DataBuffer(data.train_images[train], None, ctx.device, config.batch_size,
                                     seed=ctx.seed, drop_last=True)
        self.val_data = DataBuffer(data.train_images[val], None, ctx.device, 1000, shuffle=False)
        self.test_data = DataBuffer(data.test_images, None, ctx.device, 1000, shuffle=False)
        self.logits = torch.zeros(self.shape, device=ctx.device, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=config.learning_rate)
        self.noise = ctx.generator("samples")

    def nll(self, images: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in nats per image, intensities in [0, 1] as probabilities."""
        logits = self.logits.expand_as(images)
        return F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1)

    def train_step(self) -> dict[str, float]:
        loss = self.nll(self.train_data.next().images).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        return {"train/nll": loss.item()}

    @torch.no_grad()
    def mean_nll(self, split: DataBuffer) -> float:
        return sum(float(self.nll(b.images).sum()) for b in split.ordered()) / split.num_samples

    def evaluate(self) -> dict[str, float]:
        return {"val/nll": self.mean_nll(self.val_data), "eval/nll": self.mean_nll(self.test_data)}

    def sample(self, n: int) -> torch.Tensor:
        probabilities = torch.sigmoid(self.logits.detach()).expand(n, *self.shape)
        pixels = torch.bernoulli(probabilities, generator=self.noise)
        return pixels.mul(255).to(torch.uint8).cpu()  # uint8 (n, C, H, W) on the CPU

    def write_media(self, media_dir: Path) -> dict[str, Path]:
        path = self.ctx.media_path(f"samples-step{self.global_step:09d}", ".png")  # never overwrites
        return {"media/samples": save_grid(self.sample(64), path)}

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self.logits.detach(), "optimizer": self.optimizer.state_dict(),
                "data": self.train_data.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_data.load_state_dict(state["data"])


@hookimpl
def register_algorithms(register) -> None:
    register(Pixels)
