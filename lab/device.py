"""Pick the training device (`auto` prefers cuda, then mps, then cpu) and use its threads well,
also on a CPU other processes share."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from lab.api import LabError

# Up to this many samples a CPU forward pass is faster on one thread: the work is too small
# to split and waking the other threads costs more (Nature CNN, project's 2-core CPU, 2 vs 1
# threads: batch 1 1.24 vs 0.72 ms, batch 8 2.43 vs 2.33 ms, batch 16 3.18 vs 3.60 ms).
SMALL_BATCH = 8


@contextmanager
def small_pass_threads(batch: int, device: torch.device) -> Iterator[None]:
    """Run a pass over `batch` samples on one CPU thread when that is faster (see SMALL_BATCH);
    acting on one or a few observations is the case: it happens on every env step."""
    if device.type != "cpu" or batch > SMALL_BATCH or torch.get_num_threads() == 1:
        yield
        return
    with torch_threads(1):
        yield


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a section on `threads` CPU threads (one for a small pass, all for a population's
    batched update), then go back to the threads it found."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def fast_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies in bfloat16 faster than in fp32: a GPU with bf16 tensor
    cores (Ampere or newer) or a CPU with AMX tiles (Xeon Sapphire Rapids or newer). On the
    project's AMX CPU a diffusion U-Net step under bf16 autocast ran 1.76x; on a CPU with
    AVX-512 BF16 but no AMX the cnn's step was slower (64 vs 61 ms), hence AMX, not bf16 alone."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))  # torch leaves it unannotated
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch's own check (no public API yet)
        return bool(amx is not None and amx())
    return False


def resolve_precision(setting: str, supports_bf16: bool, device: torch.device) -> Literal["fp32", "bf16"]:
    """`--precision auto` is bf16 where the plugin autocasts its passes and the device is fast
    at it (`fast_bf16`), fp32 elsewhere; fp32 and bf16 are what they say."""
    if setting == "auto":
        return "bf16" if supports_bf16 and fast_bf16(device) else "fp32"
    return "bf16" if setting == "bf16" else "fp32"


def training_threads(pinned: int | None, preferred: int | None, device: torch.device) -> SharedCores | None:
    """Set torch's threads for training: `--threads` (`pinned`), else the algorithm's choice
    (`preferred`), else torch's. Unless pinned, a CPU run on several threads gives up threads
    to the processes beside it: the `SharedCores` to adjust every step, else None."""
    threads = pinned or preferred
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cpu" and pinned is None and torch.get_num_threads() > 1:
        return SharedCores(torch.get_num_threads())
    return None


class SharedCores:
    """Train on the cores other processes leave free, re-checked every `every_s` seconds.

    A CPU run's OpenMP threads wait for each other at every op; when another process holds a
    core, the thread on it is preempted and every op waits out its time slice. Measured on
    the project's 2-core CPU with one busy process beside it, a `sac` HalfCheetah gradient
    step took 150 ms on two threads against 7.7 ms on one (5.5 ms on two, idle). So the run
    uses `most` threads while the cores are free, and as many as other processes leave
    (at least one) while they are not. What others use is read from the kernel's CPU time
    counters (Linux `/proc`; elsewhere the threads stay at `most`): the busy time of the
    cores this process may run on, minus this process's own.
    """

    MARGIN = 0.25  # a core counts as free when others leave at least 0.75 of it

    def __init__(self, most: int, every_s: float = 1.0,
                 read: Callable[[], tuple[float, float, float] | None] | None = None) -> None:
        self.most, self.every_s = most, every_s
        self.read = read or read_cpu_times
        self.last = self.read()
        self.next_check = time.monotonic() + every_s
        self.threads = most

    def adjust(self) -> int:
        """Set torch's threads to what the cores now allow (at most once per `every_s`); returns them."""
        now = time.monotonic()
        if self.last is None or now < self.next_check:
            return self.threads
        self.next_check = now + self.every_s
        sample = self.read()
        if sample is None:
            return self.threads
        (busy0, own0, wall0), (busy1, own1, wall1) = self.last, sample
        self.last = sample
        if wall1 <= wall0:
            return self.threads
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)  # in cores
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, min(self.most, int(cores - others + self.MARGIN)))
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads


def read_cpu_times() -> tuple[float, float, float] | None:
    """(busy seconds of the cores this process may use, this process's CPU seconds, wall
    seconds), from /proc; None where there is no /proc."""
    try:
        allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        busy = 0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if name in allowed:  # user nice system idle iowait irq softirq steal ...
                    values = [int(v) for v in fields[:8]]
                    busy += sum(values) - values[3] - values[4]
        with open("/proc/self/stat", encoding="ascii") as f:
            utime, stime = f.read().rpartition(")")[2].split()[11:13]
    except (OSError, AttributeError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return busy / ticks, (int(utime) + int(stime)) / ticks, time.monotonic()
