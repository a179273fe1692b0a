"""Sample quality of the lab's `gan` against pytorch/examples' DCGAN recipe, same data, same epochs, same metric.

The peer is pytorch/examples' dcgan/main.py as its users run it on MNIST, written out here
(its networks, init and loop; no torchvision): images resized to 64x64 and scaled to [-1, 1],
nz 100, ngf = ndf = 64, a sigmoid discriminator with BCELoss, Adam 2e-4 with beta1 0.5,
batch 64, reshuffled each epoch, `--epochs` (its recipe: 25); it draws samples from its
generator in training mode, as the script does. It trains on the very rows `gan` trains on
(MNIST's training images less the 5,000 held out).

Ours is `lab train gan --data mnist --epochs E` (the mnist preset, 28 pixels), run as a user
runs it; `--lab-flags` adds flags to it, e.g. the peer's size (`--image-size 64 --g-width 64
--d-width 64`) to tell the recipes apart from the model sizes. The measure is at the peer's 64
pixels: MNIST resized once to 64 (bilinear, as the peer's data) is the real set, the lab's
reference cnn is trained on it (and cached, as for any dataset), and our 28-pixel samples go
through the same resize, so both sides are compared to real images that went where their
samples went. (Measuring at 28 instead would blur the peer's samples on the way down: real test
images resized 28 -> 64 -> 28 already score an `eval/fld` of 13 there, 100x the floor.) Both
sides' final generators draw `--samples` images, measured by one `SampleQuality` (`eval/fld`
beside its floor, KID, precision and recall); ours is also measured by its own run's classifier
(`lab_own_classifier`: at 28 pixels for the preset). `--sides lab` or `peer` trains one side
only: the peer on one thread is the same for a seed, so a lab variant can be measured without
retraining it.
Wall times are not like for like: ours is the whole `lab train` process (start-up, data,
its evaluation after each epoch), the peer's only its training loop.
Prints one JSON object with each side's metrics, steps and wall time, and the machine.

    python bench/gan_peer.py --json [--epochs 25] [--seed 1] [--device auto] [--threads N]
    python bench/gan_peer.py --json --epochs 1 --lab-flags="--image-size 64 --g-width 64 --d-width 64"
    python bench/gan_peer.py --json --max-steps 20 --samples 500   # a smoke run of every path
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from _machine import describe
from gan_throughput import Quiet

import lab
from lab.api import ImageDataset, split_validation
from lab.device import resolve_device
from lab.generative.images import to_uint8
from lab.generative.quality import SampleQuality
from lab.plugins import datasets
from lab.run.context import RunContext
from lab.run.registry import Registry

NZ, NGF, NDF, SIDE, BATCH = 100, 64, 64, 64, 64
VALIDATION = 5000  # gan's --validation-size default: the rows neither side trains on


def peer_generator() -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 8), nn.ReLU(True),
        nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
        nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
        nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),
        nn.ConvTranspose2d(NGF, 1, 4, 2, 1, bias=False), nn.Tanh())


def peer_discriminator() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 8), nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())


def peer_init(module: nn.Module) -> None:
    """The script's weights_init: conv N(0, 0.02), BatchNorm scale N(1, 0.02) and bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def up(images: torch.Tensor) -> torch.Tensor:
    """uint8 28x28 -> float 64x64 in [-1, 1] (its Resize(64), ToTensor, Normalize(0.5, 0.5))."""
    return F.interpolate(images.float() / 127.5 - 1.0, size=SIDE, mode="bilinear", align_corners=False)


def to_64(images: torch.Tensor) -> torch.Tensor:
    """uint8 28x28 -> uint8 64x64, as the peer's data loader resizes MNIST (64x64 pass unchanged)."""
    return torch.cat([to_uint8(up(part), low=-1.0) for part in images.split(5000)])


def train_peer(images: torch.Tensor, epochs: int, seed: int, device: torch.device,
               max_steps: int | None) -> tuple[nn.Module, int, float]:
    """The script's loop on uint8 64x64 `images`: D on a real batch (label 1) and a generated
    one (label 0), then G (label 1)."""
    torch.manual_seed(seed)
    g, d = peer_generator().to(device), peer_discriminator().to(device)
    g.apply(peer_init), d.apply(peer_init)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    order = torch.Generator().manual_seed(seed)
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for rows in torch.randperm(len(images), generator=order).split(BATCH):
            real = (images[rows].float() / 127.5 - 1.0).to(device)
            n = len(real)
            d.zero_grad()
            bce(d(real).view(-1), torch.ones(n, device=device)).backward()
            fake = g(torch.randn(n, NZ, 1, 1, device=device))
            bce(d(fake.detach()).view(-1), torch.zeros(n, device=device)).backward()
            opt_d.step()
            g.zero_grad()
            bce(d(fake).view(-1), torch.ones(n, device=device)).backward()
            opt_g.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                return g, steps, time.perf_counter() - start
    return g, steps, time.perf_counter() - start


@torch.no_grad()
def sample_peer(g: nn.Module, n: int, seed: int, device: torch.device) -> torch.Tensor:
    """`n` uint8 64x64 samples drawn as the script draws (training-mode BatchNorm, batches of 64)."""
    noise = torch.Generator(device).manual_seed(seed)
    out = [to_uint8(g(torch.randn(min(BATCH, n - i), NZ, 1, 1, generator=noise, device=device)), low=-1.0).cpu()
           for i in range(0, n, BATCH)]
    return torch.cat(out)


def train_ours(data_dir: Path, epochs: int, seed: int, device: str, max_steps: int | None,
               threads: int | None, runs: Path, flags: list[str]) -> tuple[Path, float]:
    budget = ["--steps", str(max_steps)] if max_steps is not None else ["--epochs", str(epochs)]
    pinned = ["--threads", str(threads)] if threads else []
    command = [sys.executable, "-m", "lab", "train", "gan", "--data", "mnist", *budget, "--seed", str(seed),
               "--device", device, *pinned, "--runs-dir", str(runs), "--name", "ours", "--trackers", "jsonl", *flags]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "LAB_DATA_DIR": str(data_dir)},
                   stdout=subprocess.DEVNULL)
    return runs / "ours", time.perf_counter() - start


def mnist_context(data_dir: Path, device: torch.device) -> RunContext:
    """A context of an MNIST run: its dataset, and the device the yardstick runs on."""
    registry = Registry()
    registry.add_dataset("datasets", "mnist", datasets.mnist)
    return RunContext(device=device, seed=0, total_steps=0, run_dir=Path("."), registry=registry, tracker=Quiet(),
                      data="mnist", data_dir=data_dir)


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25, help="both sides (the peer's recipe: 25)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each side after this many steps (smoke runs)")
    parser.add_argument("--samples", type=int, default=10000, help="images each side draws for the metrics")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    parser.add_argument("--data-dir", default=os.environ.get("LAB_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--lab-flags", default="", help="more `lab train gan` flags for our side, e.g. the peer's size")
    parser.add_argument("--sides", default="lab,peer", choices=["lab,peer", "lab", "peer"],
                        help="which sides to train (the peer is deterministic for a seed and thread count)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    ctx = mnist_context(data_dir, device)
    data = ctx.load_dataset()
    train_rows, val_rows = split_validation(len(data.train_images), VALIDATION)
    data_64 = ImageDataset(f"{data.name}@64", to_64(data.train_images), data.train_labels, to_64(data.test_images),
                           data.test_labels, data.classes)
    quality = SampleQuality(data_64, ctx, val_rows)
    report = lambda *a: None if args.json else print(*a, file=sys.stderr)  # noqa: E731

    sides = args.sides.split(",")
    floor = quality.floor
    result = {"bench": "gan_peer",
              "metric": "final generator's samples in the features of a reference cnn of 64-pixel MNIST",
              "epochs": args.epochs, "max_steps": args.max_steps, "lab_flags": args.lab_flags,
              "samples": args.samples, "seed": args.seed, "fld_floor": round(floor, 4)}
    if "lab" in sides:
        with tempfile.TemporaryDirectory() as tmp:
            run, ours_seconds = train_ours(data_dir, args.epochs, args.seed, str(device), args.max_steps,
                                           args.threads, Path(tmp), shlex.split(args.lab_flags))
            summary = json.loads((run / "summary.json").read_text())
            model = lab.load(str(run), checkpoint="latest", device=str(device))
            samples = model.sample(args.samples)
            ours = quality.metrics(to_64(samples))
            ours_own = model.sample_quality().metrics(samples)
            model.close()
        report("ours", rounded(ours))
        result["lab"] = {**rounded(ours), "fld_over_floor": round(ours["eval/fld"] / floor, 2),
                         "steps": summary["global_step"], "wall_s": round(ours_seconds, 1)}
        result["lab_own_classifier"] = {**rounded(ours_own),
                                        "fld_over_floor": round(ours_own["eval/fld"] / ours_own["eval/fld_floor"], 2)}
    if "peer" in sides:
        g, peer_steps, peer_seconds = train_peer(data_64.train_images[train_rows], args.epochs, args.seed, device,
                                                 args.max_steps)
        peer = quality.metrics(sample_peer(g, args.samples, args.seed, device))
        report("peer", rounded(peer))
        result["pytorch_examples_dcgan"] = {**rounded(peer), "fld_over_floor": round(peer["eval/fld"] / floor, 2),
                                            "steps": peer_steps, "wall_s": round(peer_seconds, 1)}
    print(json.dumps({**result,
                      "machine": describe(device)}, indent=2))


if __name__ == "__main__":
    main()
