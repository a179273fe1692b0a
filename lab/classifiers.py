"""Image classifiers: the supervised baselines' models and training step, shared with the
generators' reference classifier (`lab.generative.reference`).

Every classifier is `ImageClassifier(body, head)`: `body` maps normalised images to the
penultimate features, `head` is one linear layer to the logits. Normalisation lives
inside the module (as buffers), and the module knows its input shape and class names, so a
trained model takes images in [0, 1] (float) or 0..255 (uint8) and other code can use it
without knowing the training pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class ImageClassifier(nn.Module):
    """body -> features -> linear head, for images of `input_shape` (C, H, W) and the classes
    named in `classes`."""

    def __init__(self, body: nn.Module, feature_dim: int, classes: Sequence[str], mean: Sequence[float],
                 std: Sequence[float], input_shape: Sequence[int]) -> None:
        super().__init__()
        self.body = body
        self.classes = list(classes)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.head = nn.Linear(feature_dim, len(self.classes))
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 or float 0..1 -> zero-mean, unit-variance per channel."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return (images - self.mean) / self.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (what a Frechet distance is measured in)."""
        return self.body(self.normalize(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for uint8 or [0, 1] float images."""
        return self.head(self.features(images))


def logreg_body(shape: Sequence[int]) -> tuple[nn.Module, int]:
    """Multinomial logistic regression: the 'features' are the pixels."""
    return nn.Flatten(), math.prod(shape)


def mlp_body(shape: Sequence[int], hidden: Sequence[int], dropout: float) -> tuple[nn.Module, int]:
    """Flatten, then Linear-ReLU-Dropout per width in `hidden`; returns (body, feature size)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = size
    return nn.Sequential(*layers), width


def conv_block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    """`convs` x (3x3 conv, batch norm, ReLU), then 2x2 max pool."""
    layers: list[nn.Module] = []
    for i in range(convs):
        conv = nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False)
        layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


def cnn_body(shape: Sequence[int], widths: Sequence[int], convs_per_block: int) -> tuple[nn.Module, int]:
    """A small VGG-style net: one block per width, global max pool to a feature vector."""
    blocks: list[nn.Module] = []
    channels = shape[0]
    for width in widths:
        blocks.append(conv_block(channels, width, convs_per_block))
        channels = width
    return nn.Sequential(*blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten()), channels


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (std floored for constant data)."""
    sample = images[:: max(1, len(images) // 20000)].float().div_(255).transpose(0, 1).flatten(1)
    return sample.mean(1).tolist(), sample.std(1).clamp_min(1e-3).tolist()


def sgd_or_adamw(model: nn.Module, kind: str, learning_rate: float, momentum: float,
                 weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (or AdamW, `momentum` as beta1); no weight decay on biases and norms."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate, betas=(momentum, 0.999))
    return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, nesterov=momentum > 0)


def classification_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy with label smoothing (the function `ctx.compile` may compile)."""
    return F.cross_entropy(model(images), labels, label_smoothing=smoothing)


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any, lr: float, smoothing: float,
                  loss: Callable[..., torch.Tensor] = classification_loss) -> torch.Tensor:
    """One cross-entropy step at learning rate `lr`; returns the loss (not synchronised).
    `loss`: `classification_loss` itself or its compiled form (`ctx.compile`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    value = loss(model, batch.images, batch.labels, smoothing)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    return value
