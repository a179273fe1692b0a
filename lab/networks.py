"""Network builders every plugin shares: the Nature-DQN convolutional torso for 84x84
Atari frames and MLPs for vector observations (image classifiers: `lab.classifiers`)."""

from __future__ import annotations

import math

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
