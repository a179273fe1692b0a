"""`lab sample`: the generators' command, registered as any plugin registers a command.

    lab sample RUN_DIR [--n 64] [--out samples.png]                   a grid of samples
    lab sample RUN_DIR --input DIR [--out DIR] [--direction a2b|b2a]   translate a folder

Works with every `lab.generative.images.ImageGenerator` run (gan, vae, cyclegan, and third-party
generators), through `lab.load`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.api import LabError, hookimpl
from lab.files import check_output
from lab.generative.base import ImageGenerator
from lab.generative.images import save_grid, translate_folder


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir")
    parser.add_argument("--n", default="64", help="images in the grid (default 64)")
    parser.add_argument("--out", help="grid PNG (default samples.png), or the output folder with --input")
    parser.add_argument("--input", metavar="DIR", help="translate the images of DIR (image-to-image runs)")
    parser.add_argument("--direction", choices=("a2b", "b2a"),
                        help="with --input: translate A to B (default) or B to A")
    parser.add_argument("--checkpoint", choices=("latest", "best"), default="best")


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise LabError(f"--n expects a positive integer; got '{text}'") from None
    if n <= 0:
        raise LabError(f"--n must be a positive integer; got {n}")
    return n


def sample(args: argparse.Namespace, lab: Any) -> int:
    """Sample a grid from a generator run, or translate a folder with an image-to-image run."""
    from lab.run.entry import load

    n = _count(args.n)
    run_dir = Path(args.run_dir)
    if args.input is None and args.direction is not None:
        raise LabError("--direction goes with --input DIR (image-to-image runs)")
    checkpoint = args.checkpoint
    if checkpoint == "best" and not (run_dir / "checkpoints" / "best.pt").is_file() \
            and (run_dir / "checkpoints" / "latest.pt").is_file():
        print("note: the run has no best.pt (no key metric was logged: unlabelled data); using latest.pt",
              file=sys.stderr)
        checkpoint = "latest"
    model = load(lab, run_dir, checkpoint)
    try:
        if not isinstance(model, ImageGenerator):
            raise LabError(f"{run_dir} is a {model.name} run ({model.kind}); lab sample needs a generator run "
                           "(gan, vae, cyclegan)")
        if args.input is not None:
            out = Path(args.out or "translated")
            check_output(out, "--out", folder=True)
            count = translate_folder(model, Path(args.input), out, args.direction or "a2b")
            print(f"translated {count} images ({args.direction or 'a2b'}) into {out}/")
            return 0
        out = Path(args.out or "samples.png")
        if out.suffix.lower() != ".png":
            raise LabError(f"--out '{out}' must name a .png file for the sample grid")
        if out.exists():
            raise LabError(f"'{out}' exists; pass another --out (lab sample never overwrites)")
        check_output(out, "--out")
        save_grid(model.sample(n), out, refused=("write the sample grid", "choose another --out"))
        print(f"wrote {n} samples to {out}")
        return 0
    finally:
        model.close()


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("sample", sample, description="a sample grid from a generator run, or translate a folder (cyclegan)",
             arguments=_arguments)
