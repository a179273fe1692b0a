"""Distributional TD targets and losses: C51 (Bellemare et al. 2017) and QR-DQN (Dabney et al. 2018).

A distributional Q-network (`lab.rl.qnetworks.QNetwork` with `distributional="c51"` or
`"qr"`) gives each action N atoms: C51 the logits of a categorical distribution over a fixed
support z_1..z_N, QR-DQN N quantiles at the midpoints tau_i = (2i - 1) / 2N. The n-step
target distribution is r_n + gamma^k (1 - done) Z(s', a*), with a* the greedy action by
expected value (of the online net under Double DQN, as Hessel et al. 2018); for C51 it is
projected back onto the support. The per-sample losses double as prioritized replay's
priorities (Hessel et al.: the KL loss, whose gradient is the cross-entropy's).
"""

from __future__ import annotations

import torch


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
