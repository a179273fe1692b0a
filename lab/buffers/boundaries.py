"""Episode boundaries under NEXT_STEP autoreset, one rule for every buffer.

After an env reports `terminated | truncated`, its next step is the autoreset step: the
action is ignored, the reward is 0 and the observation starts a new episode, so the
"transition" it forms (final observation -> first observation of the next episode) spans
two episodes and must never be learned from. Envs must not report a done on an autoreset
step (`lab.envcheck`); should one do it anyway, the step after it is treated as an
autoreset too, so even then no stored transition joins two games.
"""

from __future__ import annotations

import torch


def step_flags(
    done_prev: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(valid, terminated, truncated, done) for one vector step.

    done_prev: `done` returned for the previous step (all False before the first).
    valid: the step is a real transition (not an autoreset step).
    terminated / truncated: the step's flags, cleared on invalid steps.
    done: pass back as `done_prev` next step; any reported end, valid or not.
    """
    valid = ~done_prev
    return valid, terminated & valid, truncated & valid, terminated | truncated
