"""Network builders every plugin shares: the Nature-DQN convolutional torso for 84x84
Atari frames, MLPs for vector observations, and image classifiers (the supervised
baselines, and the generators' reference classifier).

Every classifier is `ImageClassifier(body, head)`: `body` maps normalised images to the
penultimate features, `head` is one linear layer to the logits. Normalisation lives
inside the module (as buffers), so a trained model takes images in [0, 1] (float) or
0..255 (uint8) and other code can use it without knowing the training pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

NATURE_CONV_FEATURES = 64 * 7 * 7


def nature_convs(in_channels: int) -> tuple[nn.Sequential, int]:
    """The three convolutions of Mnih et al. (2015) for 84x84 inputs, flattened; (module, features)."""
    convs = nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(),
    )
    return convs, NATURE_CONV_FEATURES


def nature_cnn(in_channels: int, features: int = 512) -> tuple[nn.Sequential, int]:
    """The Nature-DQN torso: convolutions then a `features`-unit ReLU layer; (module, features)."""
    convs, size = nature_convs(in_channels)
    return nn.Sequential(*convs, nn.Linear(size, features), nn.ReLU()), features


def mlp(in_features: int, hidden: tuple[int, ...], activation: type[nn.Module] = nn.ReLU) -> tuple[nn.Sequential, int]:
    """Linear layers of the `hidden` widths, each followed by `activation`; (module, output size)."""
    layers: list[nn.Module] = []
    size = in_features
    for width in hidden:
        layers += [nn.Linear(size, width), activation()]
        size = width
    return nn.Sequential(*layers), size


def flat_size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)

class ImageClassifier(nn.Module):
    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)
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
        return self.head(self.features(images))


def logreg_body(shape: Sequence[int]) -> tuple[nn.Module, int]:
    """Multinomial logistic regression: the 'features' are the pixels."""
    return nn.Flatten(), math.prod(shape)


def mlp_body(shape: Sequence[int], hidden: Sequence[int], dropout: float) -> tuple[nn.Module, int]:
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
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


def cnn_body(shape: Sequence[int], widths: Sequence[int], convs_per_block: int) -> tuple[nn.Module, int]:
    """A small VGG-style net: one block per width, global max pool to a feature vector."""
    blocks: list[nn.Module] = []
    channels = shape[0]
    for width in widths:
        blocks.append(conv_block(channels, width, convs_per_block))
        channels = width
    return nn.Sequential(*blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten()), channels
