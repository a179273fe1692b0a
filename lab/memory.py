"""Memory a buffer asks for, checked before it is allocated.

A buffer sized from settings (a rollout of `n_steps x num_envs`, a replay of `buffer_size`
transitions, a dataset copied to the GPU) states its bytes before allocating them; `allocating`
refuses, in one `LabError` line with the estimate and the limit, what cannot fit, and turns an
allocation that fails anyway (torch's "not enough memory", `torch.OutOfMemoryError`) into the
same kind of line rather than a traceback.

The limit is the device's free memory with a margin: on CUDA what the driver reports free plus
what torch's caching allocator holds unused (`torch.cuda.mem_get_info`), on a CPU the kernel's
estimate of what can be allocated without swapping (`MemAvailable` in /proc/meminfo). A buffer
may take `USABLE_SHARE` of it: the rest is left for the networks, the envs, the batches cut
from the buffer and the checkpoint writes. Where the free memory cannot be read (macOS, MPS),
nothing is refused up front and only a failed allocation is reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from math import prod

import torch

from lab.api import LabError

# The share of the free memory one buffer may take. A buffer is most of a run's memory (an
# Atari replay: 7 GB against a network of a few MB), but the run also needs the minibatches it
# copies out of it (a policy-gradient update copies its whole rollout once), the envs and a
# checkpoint's serialisation buffers: a fifth is left for those and for the rest of the machine.
USABLE_SHARE = 0.8

MEMINFO = "/proc/meminfo"


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """The bytes of a tensor of `shape` and `dtype` (without allocating it)."""
    return prod(shape) * dtype.itemsize


def free_bytes(device: torch.device) -> int | None:
    """The memory that can still be allocated on `device`, or None where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "cpu":
        try:
            with open(MEMINFO, encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024  # kB
        except (OSError, ValueError, IndexError):
            return None
    return None


def size_text(nbytes: float) -> str:
    """1536 -> '1.5 KB', 1.28e11 -> '128 GB' (decimal units, three significant digits)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{int(nbytes)} bytes"


def _where(device: torch.device) -> str:
    return "CPU memory" if device.type == "cpu" else f"memory on {device}"


def check_fits(what: str, nbytes: int, device: torch.device | str, fix: str) -> None:
    """Refuse (one LabError: the estimate, the limit, `fix`) `nbytes` for `what` on `device`
    when they exceed `USABLE_SHARE` of its free memory."""
    device = torch.device(device)
    free = free_bytes(device)
    if free is None:
        return
    limit = int(free * USABLE_SHARE)
    if nbytes > limit:
        raise LabError(f"{what} needs {size_text(nbytes)} of {_where(device)}, but {size_text(limit)} can be used "
                       f"({USABLE_SHARE:.0%} of the {size_text(free)} free); {fix}")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch failing to allocate (CUDA, or the CPU allocator's RuntimeError),
    or numpy (a MemoryError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("not enough memory" in text or "DefaultCPUAllocator" in text
                                              or "out of memory" in text)


@contextmanager
def allocating(what: str, nbytes: int, device: torch.device | str, fix: str) -> Iterator[None]:
    """Check `nbytes` for `what` on `device` (`check_fits`), then allocate in the block; an
    allocation that fails there anyway is the same kind of one line, not a traceback."""
    check_fits(what, nbytes, device, fix)
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        device = torch.device(device)
        free = free_bytes(device)
        known = f" ({size_text(free)} was free)" if free is not None else ""
        needs = f" needs {size_text(nbytes)} of {_where(device)}, which" if nbytes else ""
        raise LabError(f"{what}{needs} could not be allocated{known}; {fix}") from None
