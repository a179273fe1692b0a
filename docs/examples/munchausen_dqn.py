"""`m-dqn`: Munchausen DQN (Vieillard et al. 2020), a subclass of `dqn` that replaces its loss.

M-DQN adds the scaled log-policy of the action taken to the reward and bootstraps from a
soft (entropy-regularised) value, with the policy the softmax of the target Q-values at
temperature tau. Only `td_loss` changes; the acting loop, n-step prioritized replay, target
updates, checkpoints and exact resume come from `dqn`, and so do its flags (`--dueling`,
`--noisy`, `--augment shift`, ...):

    lab train m-dqn --env CartPole-v1 --plugins-dir docs/examples
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lab.api import check_ranges, hookimpl, option
from lab.plugins.dqn import DQN, DQN_PRESETS, DQNConfig


@dataclass
class MDQNConfig(DQNConfig):
    entropy_tau: float = option(0.03, "temperature of the softmax policy")
    munchausen_alpha: float = option(0.9, "scale of the log-policy bonus")
    log_policy_clip: float = option(-1.0, "lower clip of tau * log pi")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, positive=("entropy_tau",), fraction=("munchausen_alpha",))


class MunchausenDQN(DQN):
    """DQN whose target adds alpha * tau * log pi(a|s) and bootstraps from the soft value."""

    name = "m-dqn"
    Config = MDQNConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"CartPole-v1": DQN_PRESETS["CartPole-v1"]}

    def td_loss(self, observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                discounts: torch.Tensor, dones: torch.Tensor, next_observations: torch.Tensor,
                weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, taken = self.config, actions.long().unsqueeze(1)
        q_values = self.q(observations).gather(1, taken).squeeze(1)
        with torch.no_grad():
            log_pi = F.log_softmax(self.q_target(observations) / c.entropy_tau, dim=1).gather(1, taken).squeeze(1)
            next_q = self.q_target(next_observations)
            next_log_pi = F.log_softmax(next_q / c.entropy_tau, dim=1)
            soft_value = (next_log_pi.exp() * (next_q - c.entropy_tau * next_log_pi)).sum(dim=1)
            bonus = c.munchausen_alpha * (c.entropy_tau * log_pi).clamp(c.log_policy_clip, 0.0)
            targets = rewards + bonus + discounts * (1.0 - dones) * soft_value
        loss = (weights * F.smooth_l1_loss(q_values, targets, reduction="none")).mean()
        return loss, (q_values - targets).detach()


@hookimpl
def register_algorithms(register) -> None:
    register(MunchausenDQN)
