"""Images per second of a DCGAN training step: the lab's `gan` against the same model fed by a DataLoader.

Both sides run the very same step (`GAN.train_step`'s networks, optimisers and losses, same
seed and widths) on MNIST's training images; only the feeding differs:

  lab:  `gan.train_step()`, fed by `lab.buffers.DataBuffer` (the dataset as uint8 on the
        device, one gather and one batched scale to [-1, 1] per step).
  peer: the pytorch/examples DCGAN pipeline without torchvision: a map-style Dataset doing
        ToTensor + Normalize((0.5,), (0.5,)) per image, `torch.utils.data.DataLoader`
        collating (num_workers=1 and pin_memory on CUDA, 0 workers on CPU).

Steady state only: `--warmup` untimed steps first, then `--steps` timed ones; sides
alternate, `--repeats` times each, and the medians are compared. The lab's side sets its
threads as a run does; `--load N` runs N busy processes beside both sides, as on a machine
that is rarely idle. Prints one JSON object.

    python bench/gan_throughput.py --json [--steps 200] [--repeats 3] [--device auto] [--load N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _machine import add_load_option, busy_processes, describe, threads_as_the_runner_sets_them
from torch.utils.data import DataLoader, Dataset

from lab.api import Tracker
from lab.device import resolve_device
from lab.plugins import datasets, gan
from lab.run.context import RunContext
from lab.run.registry import Registry


class Quiet(Tracker):
    def log(self, metrics: dict[str, float], step: int) -> None:
        """The bench reports JSON, not logs."""


class ExamplesMNIST(Dataset):
    """torchvision's MNIST with ToTensor() and Normalize((0.5,), (0.5,)), per image."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.images[index].float().div(255) - 0.5) / 0.5


def make_gan(data_dir: Path, device: torch.device, seed: int, width: int) -> gan.GAN:
    registry = Registry()
    registry.add_dataset("datasets", "mnist", datasets.mnist)
    ctx = RunContext(device=device, seed=seed, total_steps=0, run_dir=Path("."), registry=registry, tracker=Quiet(),
                  data="mnist", data_dir=data_dir)
    torch.manual_seed(seed)
    return gan.GAN(gan.GANConfig(g_width=width, d_width=width), ctx)


def peer_step(model: gan.GAN, real: torch.Tensor) -> None:
    """`GAN.train_step` with the batch handed in (the same losses, in the same order)."""
    z = torch.randn(len(real), model.config.latent_dim, generator=model.noise, device=real.device)
    fake = model.g(z)
    d_real, d_fake = model.d(real), model.d(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    model.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    model.d_opt.step()
    d_on_fake = model.d(fake)
    g_loss = F.binary_cross_entropy_with_logits(d_on_fake, torch.ones_like(d_on_fake))
    model.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    model.g_opt.step()
    # the lab's step reads its four metrics back too
    for value in (d_loss, g_loss, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()):
        value.item()


def lab_side(model: gan.GAN) -> Callable[[], None]:
    """As the runner steps it: threads adjusted to what other processes leave free."""
    cores = threads_as_the_runner_sets_them(model, str(model.ctx.device))

    def step() -> None:
        if cores is not None:
            cores.adjust()
        model.train_step()

    return step


def peer_side(model: gan.GAN) -> Callable[[], None]:
    device = model.ctx.device
    cuda = device.type == "cuda"
    images = model.train_data.images.cpu()
    loader = DataLoader(ExamplesMNIST(images), batch_size=model.config.batch_size, shuffle=True, drop_last=True,
                        num_workers=1 if cuda else 0, pin_memory=cuda, persistent_workers=cuda,
                        generator=torch.Generator().manual_seed(model.ctx.seed))
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            real = next(batches)
        except StopIteration:
            batches = iter(loader)
            real = next(batches)
        peer_step(model, real.to(device, non_blocking=True))

    return step


def images_per_second(step: Callable[[], None], steps: int, warmup: int, batch: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=32, help="g/d width (the mnist preset: 32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=os.environ.get("LAB_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    add_load_option(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)
    data_dir = Path(args.data_dir)
    results: dict[str, list[float]] = {"lab": [], "dataloader": []}
    threads = torch.get_num_threads()
    with busy_processes(args.load):
        for repeat in range(args.repeats):
            order = ("lab", "dataloader") if repeat % 2 == 0 else ("dataloader", "lab")
            for side in order:
                torch.set_num_threads(threads)  # the peer keeps torch's default, as its users get it
                model = make_gan(data_dir, device, seed=repeat + 1, width=args.width)
                step = lab_side(model) if side == "lab" else peer_side(model)
                rate = images_per_second(step, args.steps, args.warmup, model.config.batch_size, device)
                results[side].append(round(rate, 1))
                if not args.json:
                    print(side, results[side][-1], "images/s")
    torch.set_num_threads(threads)
    lab, peer = statistics.median(results["lab"]), statistics.median(results["dataloader"])
    print(json.dumps({
        "bench": "gan_throughput", "metric": "real images per second of DCGAN training (batch 64)",
        "width": args.width, "steps": args.steps, "warmup": args.warmup, "load": args.load,
        "lab_images_per_s": lab, "dataloader_images_per_s": peer, "ratio": round(lab / peer, 3),
        "runs": results, "machine": describe(device),
    }, indent=2))


if __name__ == "__main__":
    main()
