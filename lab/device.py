"""Pick the training device: `auto` prefers cuda, then mps, then cpu."""

from __future__ import annotations

import torch

from lab.errors import LabError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LabError("--device cuda: no CUDA GPU is available here; use --device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise LabError("--device mps: Apple MPS is not available here; use --device auto or cpu")
    return torch.device(name)
