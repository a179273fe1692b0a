"""One MNIST epoch of shuffled batches of 128: lab.buffers.DataBuffer against a DataLoader.

The peer is the usual `torch.utils.data.DataLoader(TensorDataset(x, y), batch_size=128,
shuffle=True)` over images already normalised to float32 (so it does less work per batch
than the data buffer, which normalises uint8 on the fly). Both hand out (images, labels)
tensors on the same device; epochs are timed in alternating rounds, median reported.

`--load N` runs N busy processes beside both sides, as on a machine that is rarely idle.

Usage: python bench/data_buffer.py [--json] [--data-dir DIR] [--device cpu|cuda] [--threads N] [--load N]
MNIST is read from DIR/mnist (default $LAB_DATA_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from _machine import add_load_option, busy_processes
from torch.utils.data import DataLoader, TensorDataset

from lab.api import LabError
from lab.buffers import DataBuffer
from lab.device import SharedCores
from lab.plugins.datasets import read_mnist

MEAN, STD = 0.1307, 0.3081


def timed_epoch(batches, device: torch.device, before_batch=lambda: None) -> float:
    start = time.perf_counter()
    seen = 0
    for images, labels, *_ in batches:
        before_batch()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        seen += labels.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert seen == 60000
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output too)")
    parser.add_argument("--data-dir", default=os.environ.get("LAB_DATA_DIR"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both, pinned (default: as a run and as a DataLoader choose)")
    add_load_option(parser)
    args = parser.parse_args()
    if not args.data_dir:
        raise SystemExit("set LAB_DATA_DIR or --data-dir to a folder whose mnist/ holds the four *-ubyte.gz files")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        arrays = read_mnist(Path(args.data_dir) / "mnist")
    except (LabError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from error
    device = torch.device(args.device)
    images, labels = arrays["train_images"].unsqueeze(1), arrays["train_labels"].long()

    ours = DataBuffer(images, labels, device, 128, seed=0, normalize=((MEAN,), (STD,)))
    ours_crop = DataBuffer(images, labels, device, 128, seed=0, normalize=((MEAN,), (STD,)), crop_padding=2)
    loader = DataLoader(TensorDataset((images.float() / 255 - MEAN) / STD, labels), batch_size=128, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    # the lab's side adjusts its threads before each batch as a run does (lab.device.SharedCores)
    # unless --threads pins them; the DataLoader keeps torch's default, as its users get it
    threads = torch.get_num_threads()
    cores = SharedCores(threads) if device.type == "cpu" and not args.threads and threads > 1 else None

    def lab_threads() -> None:
        if cores is not None:
            cores.adjust()

    ours_s, crop_s, loader_s = [], [], []
    with busy_processes(args.load):
        for _ in range(args.rounds):
            if cores is not None:
                torch.set_num_threads(cores.adjust())
            ours_s.append(timed_epoch(ours, device, lab_threads))
            crop_s.append(timed_epoch(ours_crop, device, lab_threads))
            torch.set_num_threads(threads)
            loader_s.append(timed_epoch(loader, device))
    result = {
        "epoch_s": statistics.median(ours_s),
        "dataloader_epoch_s": statistics.median(loader_s),
        "speedup": statistics.median(loader_s) / statistics.median(ours_s),
        "epoch_with_crop_s": statistics.median(crop_s),
        "batch_size": 128,
        "batches_per_epoch": len(ours),
        "device": str(device),
        "load": args.load,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
        + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ", no GPU"),
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
