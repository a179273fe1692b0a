"""Q-networks for the DQN family: Q(s, .) over discrete actions, and the TD target.

`dqn` builds its network with `make_q_network` (a method a subclass can replace: a
distributional head, noisy layers) and its loss with `td_loss` (idem), on top of these.
"""

from __future__ import annotations

import torch
from torch import nn

from lab.networks import flat_size, mlp, nature_cnn, nature_convs


class QNetwork(nn.Module):
    """Q(s, .) for `num_actions` actions.

    uint8 image observations (C, 84, 84) go through the Nature CNN scaled to [0, 1]; flat
    float observations through an MLP with `hidden` widths. With `dueling`, the torso
    splits into a value and an advantage stream, each with its own hidden layer (Wang et
    al. 2016: two 512-unit streams after the convolutions; for an MLP, the last hidden
    layer), and Q = V + A - mean(A).
    """

    def __init__(self, observation_shape: tuple[int, ...], num_actions: int,
                 hidden: tuple[int, ...] = (64, 64), dueling: bool = False) -> None:
        super().__init__()
        self.images = len(observation_shape) == 3
        self.dueling = dueling
        if self.images:
            self.torso, features = nature_convs(observation_shape[0]) if dueling else nature_cnn(observation_shape[0])
            stream = 512
            # NHWC convolutions: about 1.3x faster on CPU (oneDNN), fine on cuDNN
            self.torso.to(memory_format=torch.channels_last)
        else:
            shared = hidden[:-1] if dueling and hidden else hidden
            self.torso, features = mlp(flat_size(observation_shape), shared)
            stream = hidden[-1] if dueling and hidden else 0
        if dueling:
            def head(outputs: int) -> nn.Module:
                if not stream:
                    return nn.Linear(features, outputs)
                return nn.Sequential(nn.Linear(features, stream), nn.ReLU(), nn.Linear(stream, outputs))

            self.advantage, self.value = head(num_actions), head(1)
        else:
            self.advantage, self.value = nn.Linear(features, num_actions), None

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


def td_targets(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    dones: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None,
) -> torch.Tensor:
    """r_n + gamma^k (1 - done) Q_target(s', a'), with a' = argmax of the online net when
    `next_q_online` is given (Double DQN) and of the target net otherwise."""
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + discounts * (1.0 - dones) * next_value
