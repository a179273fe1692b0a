"""How an algorithm's `state_dict` marks a ring of slots (a replay memory's contents) so that
checkpoints write only what changed since the last one (`lab.run.chunks` does the writing)."""

from __future__ import annotations

from typing import Any

import torch

ROWS = "__rows__"


def rows_state(tensors: dict[str, torch.Tensor], steps: int, margin: int) -> dict[str, Any]:
    """Mark `tensors` (first dimension: the same ring of slots) for chunked saving. `steps`:
    writes so far (the write of step s went to slot s % slots); `margin`: how many slots
    before the cursor a write may still change (an n-step window, a truncation mark)."""
    return {ROWS: 1, "tensors": tensors, "steps": int(steps), "margin": int(margin)}
