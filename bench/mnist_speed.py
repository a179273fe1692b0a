"""Seconds to reach a test accuracy on MNIST: the lab's `cnn` versus a DataLoader peer.

Both sides train the same network (the lab's CNN builder, same seed, same init), with the
same optimiser, batch size, label smoothing, LR schedule (`lab.schedules.warmup_decay`) and
crop augmentation, on the same images: the lab's training split (the `cnn` holds out
`validation_size` training images; the peer gets exactly the images the lab trains on).
Only how the step is run differs:

  lab:  the `cnn` algorithm itself (`train_step`), fed by `lab.buffers.DataBuffer`: the
        whole dataset as uint8 on the device, one gather + batched augmentation per step;
        weights stored channels-last (NHWC convolutions) and the loss compiled when
        `--compile` says so (`auto` leaves it eager on a CPU).
  peer: the pytorch/examples MNIST pipeline: a map-style Dataset doing per-sample
        ToTensor / RandomCrop(padding) work, `torch.utils.data.DataLoader` collating
        (num_workers=1 and pin_memory on CUDA, 0 workers on CPU, as in pytorch/examples),
        PyTorch's default NCHW weights, eager. `--sides ...,dataloader_channels_last` runs
        the peer with NHWC weights too, to show what the layout alone is worth.

`bound` is the lab's step on one batch already on the device (forward, backward,
optimizer: the network's arithmetic) as a fraction of its whole step.

The clock runs only while training; it is paused for the periodic test evaluations
(identical code on both sides). Where a run crosses a target depends on its shuffle order,
so each side runs several seeds (alternating sides, so drifts of a shared machine hit
both) and the medians are compared. Prints one JSON object.

`--load N` runs N busy processes beside both sides, as on a machine that is rarely idle.

    python bench/mnist_speed.py --json [--target 0.99] [--max-epochs 3] [--seeds 1,2,3] [--device auto]
                                [--compile auto|true|false] [--load N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _machine import add_load_option, busy_processes, describe, threads_as_the_runner_sets_them
from torch.utils.data import DataLoader, Dataset

from lab.api import Tracker
from lab.classifiers import training_step
from lab.device import resolve_device
from lab.plugins import datasets, supervised
from lab.run.context import RunContext
from lab.run.registry import Registry
from lab.schedules import warmup_decay


class Quiet(Tracker):
    def log(self, metrics: dict[str, float], step: int) -> None:
        """The bench reports JSON, not logs."""


class ExamplesMNIST(Dataset):
    """torchvision.datasets.MNIST + transforms, per sample, without torchvision: uint8 image ->
    float [0, 1] (ToTensor) -> random crop of the zero-padded image (RandomCrop(28, padding))."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int) -> None:
        self.images, self.labels, self.padding = images, labels, padding

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float().div(255)
        if self.padding:
            p = self.padding
            padded = F.pad(image, (p, p, p, p))
            top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
            image = padded[:, top : top + image.shape[1], left : left + image.shape[2]]
        return image, int(self.labels[index])


def make_cnn(data_dir: Path, device: torch.device, total_steps: int, seed: int,
             compile_setting: str = "auto") -> supervised.CNN:
    registry = Registry()
    registry.add_dataset("datasets", "mnist", datasets.mnist)
    ctx = RunContext(device=device, seed=seed, total_steps=total_steps, run_dir=Path("."), registry=registry,
                  tracker=Quiet(), data="mnist", data_dir=data_dir, compile_setting=compile_setting)
    torch.manual_seed(seed)
    return supervised.CNN(supervised.CNNConfig(), ctx)


def peer_steps(algo: supervised.CNN, images: torch.Tensor, labels: torch.Tensor,
               memory_format: torch.memory_format = torch.contiguous_format) -> Iterator[None]:
    """One optimizer step per item, fed by DataLoader; same model/optimizer/schedule as the lab.

    The model's weights go back to PyTorch's default NCHW layout, as pytorch/examples keeps
    them (the `cnn` stores them channels-last); `memory_format` shows what that part is worth."""
    cfg, device = algo.config, algo.ctx.device
    algo.model.to(memory_format=memory_format)  # in place: the optimizer keeps the same tensors
    cuda = device.type == "cuda"
    loader = DataLoader(ExamplesMNIST(images, labels, cfg.crop_padding if cfg.augment else 0), batch_size=cfg.batch_size,
                        shuffle=True, drop_last=True, num_workers=1 if cuda else 0, pin_memory=cuda,
                        generator=torch.Generator().manual_seed(algo.ctx.seed), persistent_workers=cuda)
    schedule = warmup_decay(cfg.learning_rate, algo.ctx.total_steps, cfg.warmup)
    while True:
        for x, y in loader:
            lr = schedule(algo.global_step)
            for group in algo.optimizer.param_groups:
                group["lr"] = lr
            algo.model.train()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(algo.model(x), y, label_smoothing=cfg.label_smoothing)
            algo.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            algo.optimizer.step()
            algo.global_step += 1
            yield


def lab_steps(algo: supervised.CNN) -> Iterator[None]:
    """As the runner steps it: threads as a run sets them, adjusted before each step to what
    other processes leave free (`lab.device.SharedCores`)."""
    cores = threads_as_the_runner_sets_them(algo, str(algo.ctx.device))
    while True:
        if cores is not None:
            cores.adjust()
        algo.train_step()
        yield


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_to_targets(algo: supervised.CNN, steps: Iterator[None], targets: list[float], max_steps: int,
                    eval_every: int) -> dict[str, object]:
    """Train until every target accuracy is reached (or max_steps); the clock excludes evaluation."""
    device = algo.ctx.device
    reached: dict[str, float | None] = {f"{t:g}": None for t in targets}
    trained, curve = 0.0, []
    accuracy = 0.0
    while algo.global_step < max_steps and any(v is None for v in reached.values()):
        sync(device)
        start = time.perf_counter()
        for _ in range(min(eval_every, max_steps - algo.global_step)):
            next(steps)
        sync(device)
        trained += time.perf_counter() - start
        metrics = algo.evaluate()
        accuracy = metrics["eval/accuracy"]
        curve.append({"step": algo.global_step, "seconds": round(trained, 3), "accuracy": round(accuracy, 5),
                      "val_accuracy": round(metrics["val/accuracy"], 5)})
        for t in targets:
            if reached[f"{t:g}"] is None and accuracy >= t:
                reached[f"{t:g}"] = round(trained, 3)
    return {"seconds_to": reached, "final_accuracy": accuracy, "steps": algo.global_step,
            "train_seconds": round(trained, 3), "curve": curve}


def arithmetic_seconds_per_step(data_dir: Path, device: torch.device, seed: int, compile_setting: str,
                                steps: int = 30) -> float:
    """The lab's step on one batch already on the device, no data pipeline: the network's
    forward, backward and optimizer arithmetic alone, the bound on this machine."""
    algo = make_cnn(data_dir, device, steps + 3, seed, compile_setting)
    batch = algo.train_data.next()
    for _ in range(3):
        training_step(algo.model, algo.optimizer, batch, 0.01, 0.0, algo.loss)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        training_step(algo.model, algo.optimizer, batch, 0.01, 0.0, algo.loss)
    sync(device)
    return (time.perf_counter() - start) / steps


def warm_up(data_dir: Path, device: torch.device, seed: int, compile_setting: str) -> None:
    """A few untimed steps so one-off costs (kernel/primitive setup, allocator) hit neither side."""
    algo = make_cnn(data_dir, device, 10, seed, compile_setting)
    for _ in range(3):
        algo.train_step()
    algo.evaluate()


def run(side: str, data_dir: Path, device: torch.device, targets: list[float], max_epochs: float,
        eval_fraction: float, seed: int, compile_setting: str) -> dict[str, object]:
    algo = make_cnn(data_dir, device, 0, seed, compile_setting)
    per_epoch = algo.steps_per_epoch
    max_steps = int(max_epochs * per_epoch)
    algo.ctx.total_steps = max_steps  # as the runner does for --epochs
    # the peer trains on exactly the lab's training split (the validation images held out)
    images, labels = algo.train_data.images.cpu(), algo.train_data.labels.cpu()
    builders: dict[str, Callable[[], Iterator[None]]] = {
        "lab": lambda: lab_steps(algo),
        "dataloader": lambda: peer_steps(algo, images, labels),
        "dataloader_channels_last": lambda: peer_steps(algo, images, labels, torch.channels_last),
    }
    threads = torch.get_num_threads()
    try:
        result = time_to_targets(algo, builders[side](), targets, max_steps, max(1, int(eval_fraction * per_epoch)))
    finally:
        torch.set_num_threads(threads)  # the peer keeps torch's default, as its users get it
    return {"steps_per_epoch": per_epoch, "train_images": len(images), "validation_size": algo.config.validation_size,
            **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--target", type=float, action="append", help="test accuracy to reach (repeatable)")
    parser.add_argument("--max-epochs", type=float, default=3.0, help="budget and LR-schedule horizon")
    parser.add_argument("--eval-every", type=float, default=0.25, help="evaluate every this fraction of an epoch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"], help="the lab's --compile")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds; medians are compared")
    parser.add_argument("--data-dir", default=os.environ.get("LAB_DATA_DIR", "data"))
    parser.add_argument("--sides", default="lab,dataloader",
                        help="pipelines to run, comma-separated: lab, dataloader, dataloader_channels_last")
    add_load_option(parser)
    args = parser.parse_args()
    with busy_processes(args.load):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    targets = args.target or ([0.99, 0.995] if device.type == "cuda" else [0.99])
    seeds = [int(seed) for seed in args.seeds.split(",")]
    sides = args.sides.split(",")
    machine = describe(device)  # before the runs: the load average says whether the machine was idle
    warm_up(Path(args.data_dir), device, seeds[0], args.compile)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for seed in seeds:
        for side in sides:
            runs[side].append({"seed": seed, **run(side, Path(args.data_dir), device, targets, args.max_epochs,
                                                   args.eval_every, seed, args.compile)})
    results = {side: summarise(side_runs, targets) for side, side_runs in runs.items()}
    first = runs[sides[0]][0]
    report: dict[str, object] = {
        "bench": "mnist_speed", "device": str(device), "machine": machine, "targets": targets,
        "max_epochs": args.max_epochs, "seeds": seeds, "compile": args.compile, "load": args.load,
        "data": {"train_images": first["train_images"], "validation_size": first["validation_size"],
                 "both_sides_train_on": "the lab's training split: train_images MNIST training images, "
                                        "validation_size held out; accuracy is on the 10k test split"},
        **results,
    }
    if {"lab", "dataloader"} <= results.keys():
        lab_t, peer_t = results["lab"]["median_seconds_to"], results["dataloader"]["median_seconds_to"]
        report["speedup"] = {k: (round(peer_t[k] / lab_t[k], 2) if lab_t[k] and peer_t[k] else None) for k in lab_t}
        report["speedup_per_step"] = round(results["dataloader"]["seconds_per_step"] / results["lab"]["seconds_per_step"], 2)
    if "lab" in results:
        arithmetic = arithmetic_seconds_per_step(Path(args.data_dir), device, seeds[0], args.compile)
        report["bound"] = {"arithmetic_seconds_per_step": round(arithmetic, 5),
                           "network_fraction_of_lab_step": round(arithmetic / results["lab"]["seconds_per_step"], 3)}
    if not args.json:
        print(f"mnist_speed on {device}:")
    print(json.dumps(report, indent=None if args.json else 2))


def summarise(side_runs: list[dict[str, Any]], targets: list[float]) -> dict[str, Any]:
    """Median seconds to each target over the seeds (None when a seed never reached it)."""
    medians: dict[str, float | None] = {}
    for t in targets:
        times = [r["seconds_to"][f"{t:g}"] for r in side_runs]
        medians[f"{t:g}"] = None if None in times else round(statistics.median(times), 3)
    seconds = sum(r["train_seconds"] for r in side_runs)
    steps = sum(r["steps"] for r in side_runs)
    return {"median_seconds_to": medians, "seconds_per_step": seconds / steps, "runs": side_runs}


if __name__ == "__main__":
    main()
