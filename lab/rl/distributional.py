"""Return heads for the DQN family: what a Q-network's outputs per action are, and the TD loss on them.

`--distributional` picks one head, once: `ExpectedValue` (none: one Q-value per action, the
Huber loss on TD errors), `Categorical` (c51, Bellemare et al. 2017: the logits of a
categorical distribution over a fixed support z_1..z_N) or `Quantiles` (qr, QR-DQN, Dabney et
al. 2018: N quantiles at the midpoints tau_i = (2i - 1) / 2N). The network's `outputs` hold the
head's numbers, the head turns them into expected values (for acting and for the argmax of
the next action) and learns them: the n-step target r_n + gamma^k (1 - done) Z(s', a*),
projected back onto the support for C51, and a per-sample loss whose values double as
prioritized replay's priorities (Hessel et al. 2018: the KL loss, whose gradient is the
cross-entropy's; the TD error for expected values).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn


class ReturnHead(nn.Module, ABC):
    """One way to predict returns: a module only so C51's support follows the network's device
    (it holds no weights, and nothing in checkpoints)."""

    atoms: int  # numbers per action in the network's outputs: 1 is a plain Q-value

    @abstractmethod
    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected values (B, A) of the network's outputs (B, A) or (B, A, N)."""

    @abstractmethod
    def targets(self, rewards: torch.Tensor, discounts: torch.Tensor, dones: torch.Tensor,
                next_outputs: torch.Tensor) -> torch.Tensor:
        """The n-step target for the outputs (B,) or (B, N) of the next state's chosen action."""

    @abstractmethod
    def losses(self, taken: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample losses (B,), their priorities) for the taken actions' outputs."""


class ExpectedValue(ReturnHead):
    """DQN's head: a Q-value per action, the Huber loss on TD errors, priorities the TD errors."""

    atoms = 1

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    def targets(self, rewards: torch.Tensor, discounts: torch.Tensor, dones: torch.Tensor,
                next_outputs: torch.Tensor) -> torch.Tensor:
        return rewards + discounts * (1.0 - dones) * next_outputs

    def losses(self, taken: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.smooth_l1_loss(taken, targets, reduction="none"), (taken - targets).detach()


class Categorical(ReturnHead):
    """C51's head: `num_atoms` logits over the support linspace(v_min, v_max), the
    cross-entropy to the projected target."""

    def __init__(self, num_atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0) -> None:
        super().__init__()
        if num_atoms < 2:
            raise ValueError(f"--num-atoms must be >= 2 with --distributional c51, got {num_atoms}")
        if not v_min < v_max:
            raise ValueError(f"--v-min must be below --v-max, got {v_min} and {v_max}")
        self.atoms = num_atoms
        # derived from the settings: no place in checkpoints
        self.register_buffer("support", torch.linspace(v_min, v_max, num_atoms), persistent=False)

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        return (outputs.softmax(dim=-1) * self.support).sum(dim=-1)

    def targets(self, rewards: torch.Tensor, discounts: torch.Tensor, dones: torch.Tensor,
                next_outputs: torch.Tensor) -> torch.Tensor:
        return categorical_projection(rewards, discounts, dones, next_outputs.softmax(dim=1), self.support)

    def losses(self, taken: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses = -(targets * taken.log_softmax(dim=1)).sum(dim=1)
        return losses, losses.detach()


class Quantiles(ReturnHead):
    """QR-DQN's head: `num_atoms` quantiles, the quantile Huber loss to the target's quantiles."""

    def __init__(self, num_atoms: int = 51) -> None:
        super().__init__()
        if num_atoms < 2:
            raise ValueError(f"--num-atoms must be >= 2 with --distributional qr, got {num_atoms}")
        self.atoms = num_atoms

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.mean(dim=-1)

    def targets(self, rewards: torch.Tensor, discounts: torch.Tensor, dones: torch.Tensor,
                next_outputs: torch.Tensor) -> torch.Tensor:
        return rewards.unsqueeze(1) + (discounts * (1.0 - dones)).unsqueeze(1) * next_outputs

    def losses(self, taken: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses = quantile_huber_loss(taken, targets)
        return losses, losses.detach()


def categorical_projection(rewards: torch.Tensor, discounts: torch.Tensor, dones: torch.Tensor,
                           next_probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """The target distribution (B, N) on `support`: each atom r + gamma^k (1 - done) z_j,
    clipped to [v_min, v_max], splits its probability between its two neighbouring atoms in
    proportion to closeness (Bellemare et al. 2017, algorithm 1).

    Written as one triangular kernel, m_i = sum_j [1 - |Tz_j - z_i| / dz]_0^1 p_j (Rowland et
    al. 2018's form, Dopamine's): no scatter, so no atomics and the same sums on every run.
    """
    delta = support[1] - support[0]
    shifted = rewards.unsqueeze(1) + (discounts * (1.0 - dones)).unsqueeze(1) * support  # (B, N): Tz_j
    shifted = shifted.clamp(support[0], support[-1])
    closeness = (1.0 - (shifted.unsqueeze(1) - support.view(1, -1, 1)).abs() / delta).clamp(min=0.0)  # (B, i, j)
    return (closeness * next_probs.unsqueeze(1)).sum(dim=2)


def quantile_huber_loss(quantiles: torch.Tensor, targets: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """QR-DQN's loss per sample (B,): sum over the N quantiles theta_i of the mean over the
    target samples T_j of |tau_i - 1{u < 0}| Huber_kappa(u) / kappa, u = T_j - theta_i."""
    n = quantiles.shape[1]
    taus = (torch.arange(n, device=quantiles.device, dtype=quantiles.dtype) + 0.5) / n
    errors = targets.unsqueeze(1) - quantiles.unsqueeze(2)  # (B, i, j)
    size = errors.abs()
    huber = torch.where(size <= kappa, 0.5 * errors.square(), kappa * (size - 0.5 * kappa))
    weight = (taus.view(1, -1, 1) - (errors.detach() < 0).to(quantiles.dtype)).abs()
    return (weight * huber / kappa).mean(dim=2).sum(dim=1)
