"""Q-networks for the DQN family: Q(s, .) over discrete actions.

`dqn` builds its network with `make_q_network` (a method a subclass can replace) and its
loss with `td_loss` (idem), on top of these. The network takes Rainbow's pieces as
arguments (dueling streams, a return head, noisy layers); the return heads (expected
values, C51, quantiles) and their targets and losses are in `lab.rl.distributional`, the
noisy layer in `lab.rl.noisy`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lab.networks import flat_size, mlp, nature_cnn, nature_convs
from lab.rl.distributional import ExpectedValue, ReturnHead
from lab.rl.noisy import make_noisy


class QNetwork(nn.Module):
    """Q(s, .) for `num_actions` actions, or a return distribution per action.

    uint8 image observations (C, 84, 84) go through the Nature CNN scaled to [0, 1]; flat
    float observations through an MLP with `hidden` widths. With `dueling`, the torso
    splits into a value and an advantage stream, and Q = V + A - mean(A). `dueling_hidden`
    says where: "per-stream" gives each stream its own hidden layer (Wang et al. 2016: two
    512-unit streams after the convolutions; for an MLP, the last hidden layer), "shared"
    keeps every hidden layer in the torso and each stream is one linear layer on it
    (Dopamine's Rainbow network, which its Atari 100k agents DER and DrQ use: half the
    weights of the per-stream layout on frames, and a faster update).

    `head` (`lab.rl.distributional`, `ExpectedValue` when left out) says how many numbers
    each action gets: one Q-value, or N atoms (C51's logits, dueling combining them as Hessel
    et al. 2018 do; QR-DQN's quantiles). `outputs(obs)` gives those (B, A) or (B, A, N)
    numbers, `q_values(outputs)` the head's expected values and `forward(obs)` both in turn,
    so acting is the same argmax for every head. `noisy_sigma`: every linear layer a
    factorised `NoisyLinear` with that sigma0 (`lab.rl.noisy`).
    """

    def __init__(self, observation_shape: tuple[int, ...], num_actions: int,
                 hidden: tuple[int, ...] = (64, 64), dueling: bool = False, *,
                 dueling_hidden: Literal["per-stream", "shared"] = "per-stream",
                 head: ReturnHead | None = None, noisy_sigma: float | None = None) -> None:
        super().__init__()
        self.images = len(observation_shape) == 3
        self.dueling = dueling
        self.num_actions = num_actions
        self.head = head if head is not None else ExpectedValue()
        self.atoms = self.head.atoms
        streams_own_hidden = dueling and dueling_hidden == "per-stream"
        if self.images:
            channels = observation_shape[0]
            self.torso, features = nature_convs(channels) if streams_own_hidden else nature_cnn(channels)
            stream = 512 if streams_own_hidden else 0
            # NHWC convolutions: about 1.3x faster on CPU (oneDNN), fine on cuDNN
            self.torso.to(memory_format=torch.channels_last)
        else:
            shared = hidden[:-1] if streams_own_hidden and hidden else hidden
            self.torso, features = mlp(flat_size(observation_shape), shared)
            stream = hidden[-1] if streams_own_hidden and hidden else 0
        if dueling:
            def head(outputs: int) -> nn.Module:
                if not stream:
                    return nn.Linear(features, outputs)
                return nn.Sequential(nn.Linear(features, stream), nn.ReLU(), nn.Linear(stream, outputs))

            self.advantage, self.value = head(num_actions * self.atoms), head(self.atoms)
        else:
            self.advantage, self.value = nn.Linear(features, num_actions * self.atoms), None
        if noisy_sigma is not None:
            make_noisy(self, noisy_sigma)

    def outputs(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values (B, A); with a distributional head (B, A, N): C51's logits, QR's quantiles."""
        if self.images:
            # NHWC while still uint8 (a quarter of the bytes to move), then scale in place
            x = obs.contiguous(memory_format=torch.channels_last).float().div_(255.0)
        else:
            x = obs.float().flatten(1)
        features = self.torso(x)
        advantage = self.advantage(features)
        if self.atoms > 1:
            advantage = advantage.unflatten(1, (self.num_actions, self.atoms))
        if self.value is None:
            return advantage
        value = self.value(features)
        if self.atoms > 1:
            value = value.unsqueeze(1)
        return value + advantage - advantage.mean(dim=1, keepdim=True)

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected values (B, A) of `outputs(obs)`."""
        return self.head.q_values(outputs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_values(self.outputs(obs))


def chosen(outputs: torch.Tensor, actions: torch.Tensor, atoms: int) -> torch.Tensor:
    """Each row's `actions` entry of `outputs` (..., A) or, with a distributional head,
    (..., A, N): (...) or (..., N), for any leading dimensions (a population's members)."""
    index = actions.long().unsqueeze(-1)
    if atoms == 1:
        return outputs.gather(-1, index).squeeze(-1)
    return outputs.gather(-2, index.unsqueeze(-1).expand(*index.shape, atoms)).squeeze(-2)


def epsilon_draws(n: int, num_actions: int, epsilon: float, generator: torch.Generator,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Epsilon-greedy's random draws for `n` envs, in the order a run draws them: (uniform
    actions, which envs explore), None for the second when every env explores (epsilon 1)."""
    random_actions = torch.randint(0, num_actions, (n,), generator=generator, device=device)
    if epsilon >= 1.0:
        return random_actions, None
    return random_actions, torch.rand(n, generator=generator, device=device) < epsilon

