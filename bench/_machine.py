"""The machine a bench ran on, for its JSON (timings mean little without it), and the load
beside it (`--load N`)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's model name (platform.processor() is empty on most Linux systems)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device | str) -> dict[str, object]:
    device = torch.device(device)
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def add_load_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--load", type=int, default=0,
                        help="busy processes (a tight Python loop each) beside both sides: a machine rarely idle")


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """N processes each spinning a core while the block runs, as other jobs on a shared machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        if procs:
            time.sleep(1.0)  # let the scheduler see them before anything is timed
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def threads_as_the_runner_sets_them(algorithm: Any, device: str) -> Any:
    """Set torch's threads for `algorithm` as `lab train` does (its `cpu_threads`), and return
    the `lab.device.SharedCores` the runner would adjust before every step (None where the
    runner keeps one fixed count): a bench's lab side then runs as users' runs do."""
    from lab.device import SharedCores

    if algorithm.cpu_threads is not None:
        torch.set_num_threads(algorithm.cpu_threads)
    if torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        return None
    return SharedCores(torch.get_num_threads())
