"""Built-in datasets: `mnist`, `image-folder` and `mnist-styles`.

Every factory returns CPU uint8 (N, C, H, W) tensors; the shared data buffer moves them
to the device once. Common options: `image_size` (resize to a square of that side).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lab.api import ImageDataset, LabError, UnpairedImageDataset, hookimpl
from lab.api.errors import shorten, unknown
from lab.plugins.datasets import styles
from lab.plugins.datasets.download import fetch
from lab.plugins.datasets.idx import read_idx
from lab.plugins.datasets.image_folder import load_image_folder
from lab.plugins.datasets.image_io import resize_stack

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", (60000, 28, 28)),
    "train_labels": ("train-labels-idx1-ubyte.gz", (60000,)),
    "test_images": ("t10k-images-idx3-ubyte.gz", (10000, 28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", (10000,)),
}
MNIST_MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
DIGITS = [str(d) for d in range(10)]


def _check_options(dataset: str, options: dict[str, Any], allowed: Sequence[str]) -> None:
    for key in options:
        if key not in allowed:
            raise unknown(f"option for dataset {dataset}", key, allowed, f"options are: {', '.join(allowed)}")


def mnist_file(folder: Path, name: str) -> Path:
    """Where `folder` holds the file `name` (`train-images-idx3-ubyte.gz`): the canonical
    gzip, else the file unpacked (`train-images-idx3-ubyte`, or `train-images.idx3-ubyte`
    as some unpackers name it); the canonical path when there is neither."""
    stem = name.removesuffix(".gz")
    for candidate in (name, stem, stem.replace("-idx", ".idx", 1)):
        if (folder / candidate).is_file():
            return folder / candidate
    return folder / name


def ensure_mnist(folder: Path, mirrors: Sequence[str] | None = None) -> None:
    """Download the canonical files missing from `folder`; offline, say what to put where."""
    missing = [name for name, _ in MNIST_FILES.values() if not mnist_file(folder, name).is_file()]
    failures: list[str] = []
    for name in missing:
        failures += fetch(name, MNIST_MIRRORS if mirrors is None else mirrors, folder)
    if failures:
        absent = ", ".join(missing)
        raise LabError(  # the folder once: a message is at most 500 characters, and a path can be long
            f"MNIST's {absent} {'is' if len(missing) == 1 else 'are'} not in {folder} and could not be downloaded "
            f"({shorten(failures[-1], 120)}); put MNIST's four *-ubyte.gz files (gzipped or not) there, or point "
            "LAB_DATA_DIR / --data-dir at a folder whose mnist/ sub-folder holds them"
        )


def read_mnist(folder: Path) -> dict[str, torch.Tensor]:
    """The four arrays, each checked against its canonical shape (and labels against 0..9)."""
    arrays: dict[str, torch.Tensor] = {}
    for key, (name, shape) in MNIST_FILES.items():
        path = mnist_file(folder, name)
        array = read_idx(path)
        if tuple(array.shape) != shape or array.dtype != torch.uint8:
            raise LabError(
                f"{path} holds a {array.dtype} array of shape {tuple(array.shape)}, "
                f"expected uint8 {shape}; delete it so it is downloaded again"
            )
        arrays[key] = array
    for key in ("train_labels", "test_labels"):
        if int(arrays[key].max()) > 9:
            raise LabError(f"{mnist_file(folder, MNIST_FILES[key][0])} has labels above 9; delete it so it is "
                           "downloaded again")
    return arrays


def mnist(data_dir: Path, arg: str | None = None, **options: Any) -> ImageDataset:
    """MNIST digits, 1x28x28 (or image_size), from DATA_DIR/mnist; downloaded when missing."""
    _check_options("mnist", options, ["image_size"])
    if arg:
        raise LabError(f"mnist takes no argument (got 'mnist:{arg}'); use --data mnist and --data-dir DIR")
    folder = Path(data_dir) / "mnist"
    ensure_mnist(folder)
    arrays = read_mnist(folder)
    size = options.get("image_size")
    return ImageDataset(
        name="mnist",
        train_images=resize_stack(arrays["train_images"].unsqueeze(1), size),
        train_labels=arrays["train_labels"].long(),
        test_images=resize_stack(arrays["test_images"].unsqueeze(1), size),
        test_labels=arrays["test_labels"].long(),
        classes=DIGITS,
    )


def resolve_folder(data_dir: Path, arg: str | None) -> Path:
    """A folder given as `image-folder:PATH`: absolute, else under data_dir, else under cwd."""
    if not arg:
        raise LabError("image-folder needs a folder: --data image-folder:PATH")
    path = Path(arg).expanduser()
    if path.is_absolute():
        return path
    for base in (Path(data_dir), Path.cwd()):
        if (base / path).is_dir():
            return base / path
    raise LabError(f"image folder '{arg}' not found under {data_dir} or {Path.cwd()}; pass an existing folder")


def image_folder(data_dir: Path, arg: str | None = None, **options: Any) -> ImageDataset | UnpairedImageDataset:
    """Any folder of images: CLASS/ sub-folders, train/ + test/, loose images, or trainA/ trainB/ testA/ testB/."""
    _check_options("image-folder", options, ["image_size", "channels", "test_fraction"])
    return load_image_folder(resolve_folder(data_dir, arg), **options)


def parse_style_pair(arg: str | None) -> tuple[str, str]:
    pair = arg or styles.DEFAULT_PAIR
    a, sep, b = pair.partition("-")
    if not sep:
        raise LabError(f"mnist-styles takes STYLE_A-STYLE_B (e.g. {styles.DEFAULT_PAIR}), got '{pair}'")
    for name in (a, b):
        if name not in styles.STYLES:
            raise unknown("mnist style", name, styles.STYLES, f"styles are: {', '.join(styles.STYLES)}")
    if a == b:
        raise LabError(f"mnist-styles needs two different styles, got '{pair}'")
    return a, b


def _styled_domain(source: ImageDataset, style: str, train_idx: torch.Tensor, test_idx: torch.Tensor) -> ImageDataset:
    transform = styles.STYLES[style]
    assert source.train_labels is not None and source.test_labels is not None
    return ImageDataset(
        name=f"mnist-styles/{style}",
        train_images=styles.apply(transform, source.train_images[train_idx]),
        train_labels=source.train_labels[train_idx],
        test_images=styles.apply(transform, source.test_images[test_idx]),
        test_labels=source.test_labels[test_idx],
        classes=DIGITS,
    )


def mnist_styles(data_dir: Path, arg: str | None = None, **options: Any) -> UnpairedImageDataset:
    """Unpaired MNIST in two rendering styles (default thin-thick), each from disjoint images."""
    _check_options("mnist-styles", options, ["image_size"])
    style_a, style_b = parse_style_pair(arg)
    source = mnist(data_dir)
    train_a, train_b = styles.halves(len(source.train_images))
    test_a, test_b = styles.halves(len(source.test_images), seed=1)
    a = _styled_domain(source, style_a, train_a, test_a)
    b = _styled_domain(source, style_b, train_b, test_b)
    size = options.get("image_size")
    for domain in (a, b):
        domain.train_images = resize_stack(domain.train_images, size)
        domain.test_images = resize_stack(domain.test_images, size)
    return UnpairedImageDataset(f"mnist-styles:{style_a}-{style_b}", a, b)


@hookimpl
def register_datasets(register) -> None:
    register("mnist", mnist, description="MNIST digits (1x28x28, 10 classes); downloaded into DATA_DIR/mnist")
    register("image-folder", image_folder, description="images from a folder: image-folder:PATH")
    register("mnist-styles", mnist_styles, description="unpaired MNIST in two styles: mnist-styles:thin-thick")
