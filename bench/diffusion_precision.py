"""Seconds per training step and per sampled image of `diffusion` in fp32 and under `--precision bf16`.

Both sides are the lab's own `Diffusion` (the mnist defaults: U-Net widths 32,64,64, batch 128,
8 Heun steps a sample) built as a run builds it, on MNIST's training images; only
`ctx.precision` differs, and with it the weights' layout the plugin picks (channels-last in
fp32, NCHW under bf16 on a CPU). Steady state: `--warmup` untimed steps, then `--steps` timed
ones, then one untimed and one timed `sample(--samples)`; the sides alternate, `--repeats`
times each, and medians are compared. `--load N` runs N busy processes beside both. bf16 pays
where `--precision auto` picks it (AMX CPUs, Ampere or newer GPUs); the JSON says whether this
device is one.

    python bench/diffusion_precision.py --json [--steps 20] [--repeats 3] [--load 1] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from _machine import add_load_option, busy_processes, describe, threads_as_the_runner_sets_them
from gan_throughput import Quiet

from lab.device import fast_bf16, resolve_device
from lab.plugins import datasets, diffusion
from lab.run.context import RunContext
from lab.run.registry import Registry


def make_model(data_dir: Path, device: torch.device, precision: str, steps: int) -> diffusion.Diffusion:
    registry = Registry()
    registry.add_dataset("datasets", "mnist", datasets.mnist)
    ctx = RunContext(device=device, seed=1, total_steps=steps, run_dir=Path("."), registry=registry, tracker=Quiet(),
                  data="mnist", data_dir=data_dir, training=False, precision=precision)
    torch.manual_seed(1)
    return diffusion.Diffusion(diffusion.DiffusionConfig(), ctx)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(model: diffusion.Diffusion, steps: int, warmup: int, samples: int) -> tuple[float, float]:
    """(seconds per training step, seconds per sampled image), as the runner steps it."""
    cores = threads_as_the_runner_sets_them(model, str(model.ctx.device))
    for _ in range(warmup):
        model.train_step()
    synchronize(model.ctx.device)
    start = time.perf_counter()
    for _ in range(steps):
        if cores is not None:
            cores.adjust()
        model.train_step()
    synchronize(model.ctx.device)
    step_s = (time.perf_counter() - start) / steps
    model.sample(samples, torch.Generator(model.ctx.device).manual_seed(1))  # untimed: the batch's first kernels
    synchronize(model.ctx.device)
    start = time.perf_counter()
    model.sample(samples, torch.Generator(model.ctx.device).manual_seed(0))
    synchronize(model.ctx.device)
    return step_s, (time.perf_counter() - start) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500, help="images sampled per repeat (one solver batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=os.environ.get("LAB_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    add_load_option(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)
    data_dir = Path(args.data_dir)
    step_s: dict[str, list[float]] = {"fp32": [], "bf16": []}
    image_ms: dict[str, list[float]] = {"fp32": [], "bf16": []}
    threads = torch.get_num_threads()
    with busy_processes(args.load):
        for repeat in range(args.repeats):
            for side in ("fp32", "bf16") if repeat % 2 == 0 else ("bf16", "fp32"):
                torch.set_num_threads(threads)
                model = make_model(data_dir, device, side, args.warmup + args.steps)
                step, image = timed(model, args.steps, args.warmup, args.samples)
                step_s[side].append(round(step, 4))
                image_ms[side].append(round(1000 * image, 2))
                if not args.json:
                    print(side, step_s[side][-1], "s a step,", image_ms[side][-1], "ms an image")
    torch.set_num_threads(threads)
    medians = {side: (statistics.median(step_s[side]), statistics.median(image_ms[side])) for side in step_s}
    print(json.dumps({
        "bench": "diffusion_precision", "metric": "seconds per training step (batch 128), ms per sampled image "
                                                  "(8 Heun steps)",
        "steps": args.steps, "warmup": args.warmup, "samples": args.samples, "load": args.load,
        "fast_bf16_device": fast_bf16(device),
        "fp32_step_s": medians["fp32"][0], "bf16_step_s": medians["bf16"][0],
        "step_speedup": round(medians["fp32"][0] / medians["bf16"][0], 3),
        "fp32_image_ms": medians["fp32"][1], "bf16_image_ms": medians["bf16"][1],
        "sampling_speedup": round(medians["fp32"][1] / medians["bf16"][1], 3),
        "runs": {"step_s": step_s, "image_ms": image_ms}, "machine": describe(device),
    }, indent=2))


if __name__ == "__main__":
    main()
