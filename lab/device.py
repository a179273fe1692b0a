"""Pick the training device (`auto` prefers cuda, then mps, then cpu) and use its threads well."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lab.errors import LabError

# Up to this many samples a CPU forward pass is faster on one thread: the work is too small
# to split and waking the other threads costs more (Nature CNN, project's 2-core CPU, 2 vs 1
# threads: batch 1 1.24 vs 0.72 ms, batch 8 2.43 vs 2.33 ms, batch 16 3.18 vs 3.60 ms).
SMALL_BATCH = 8


@contextmanager
def small_pass_threads(batch: int, device: torch.device) -> Iterator[None]:
    """Run a pass over `batch` samples on one CPU thread when that is faster (see SMALL_BATCH);
    acting on one or a few observations is the case: it happens on every env step."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or batch > SMALL_BATCH or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
