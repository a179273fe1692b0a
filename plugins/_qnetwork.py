"""Q-networks for value-based agents: Nature-DQN CNN for Atari frames, MLP otherwise,
with an optional dueling head."""

from __future__ import annotations

import torch
from torch import nn


def nature_cnn(in_channels: int) -> tuple[nn.Module, int]:
    """The DQN (Mnih et al. 2015) torso for 84x84 frames; returns (module, feature size)."""
    torso = nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512), nn.ReLU(),
    )
    return torso, 512


def mlp(in_features: int, hidden: tuple[int, ...]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    size = in_features
    for width in hidden:
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    return nn.Sequential(*layers), size


class QNetwork(nn.Module):
    """Q(s, .) for `num_actions` actions.

    uint8 image observations (C, 84, 84) go through the Nature CNN scaled to [0, 1];
    flat float observations through an MLP with `hidden` widths. With `dueling`,
    Q = V + A - mean(A) (Wang et al. 2016).
    """

    def __init__(self, observation_shape: tuple[int, ...], num_actions: int,
                 hidden: tuple[int, ...] = (64, 64), dueling: bool = False) -> None:
        super().__init__()
        self.images = len(observation_shape) == 3
        if self.images:
            self.torso, features = nature_cnn(observation_shape[0])
            # NHWC convolutions: about 1.3x faster on CPU (oneDNN), fine on cuDNN
            self.torso.to(memory_format=torch.channels_last)
        else:
            self.torso, features = mlp(int(torch.tensor(observation_shape).prod()), hidden)
        self.dueling = dueling
        self.advantage = nn.Linear(features, num_actions)
        self.value = nn.Linear(features, 1) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.images:
            # NHWC while still uint8 (a quarter of the bytes to move), then scale in place
            x = obs.contiguous(memory_format=torch.channels_last).float().div_(255.0)
        else:
            x = obs.float().flatten(1)
        features = self.torso(x)
        advantage = self.advantage(features)
        if self.value is None:
            return advantage
        return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)
