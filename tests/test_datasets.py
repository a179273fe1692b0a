"""Datasets: the IDX reader, MNIST (files, download, errors), image folders, mnist-styles."""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
import pluggy
import pytest
import torch

from conftest import MNIST_NAMES, real_data_dir
from lab.api import ImageDataset, LabError, UnpairedImageDataset, hookspecs
from lab.plugins import datasets
from lab.plugins.datasets import styles
from lab.plugins.datasets.idx import encode_idx, read_idx


def closed_port() -> int:
    """A localhost port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- IDX -------------------------------------------------------------------------------------


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """Hand-written IDX encoding, independent of the code under test."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_reads_uint8_images(tmp_path: Path, compress: bool) -> None:
    pixels = bytes(range(24))
    data = idx_bytes(0x08, (2, 3, 4), pixels)
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    array = read_idx(path)
    assert array.dtype == torch.uint8 and array.shape == (2, 3, 4)
    assert array.flatten().tolist() == list(range(24))


def test_idx_reader_handles_big_endian_types(tmp_path: Path) -> None:
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(0x0C, (3,), struct.pack(">3i", -1, 2, 70000)))
    assert read_idx(path).tolist() == [-1, 2, 70000]
    path.write_bytes(idx_bytes(0x0D, (2,), struct.pack(">2f", 1.5, -2.25)))
    assert read_idx(path).tolist() == [1.5, -2.25]


def test_idx_encoder_round_trips(tmp_path: Path) -> None:
    array = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    path = tmp_path / "round.gz"
    path.write_bytes(gzip.compress(encode_idx(array)))
    assert np.array_equal(read_idx(path).numpy(), array)


@pytest.mark.parametrize(
    "content, message",
    [
        (idx_bytes(0x08, (2, 3), bytes(5)), "truncated"),
        (idx_bytes(0x08, (2, 3), bytes(7)), "truncated"),
        (b"\x01\x02\x08\x01", "not an IDX"),
        (idx_bytes(0x42, (1,), bytes(1)), "type code"),
        (b"\x00\x00\x08\x03\x00\x00", "header"),
        # mtime=0: no timestamp in the bytes, so the test id is the same in every pytest-xdist worker
        (gzip.compress(idx_bytes(0x08, (4,), bytes(4)), mtime=0)[:-6], "gzip"),
    ],
)
def test_idx_reader_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(LabError, match=message):
        read_idx(path)


# -- MNIST -----------------------------------------------------------------------------------


def test_mnist_loads_real_files_with_canonical_shapes() -> None:
    data = datasets.mnist(real_data_dir())
    assert data.train_images.shape == (60000, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_labels.dtype == torch.int64 and data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.bincount(data.test_labels).tolist()[:2] == [980, 1135]
    assert data.classes == [str(d) for d in range(10)]


def test_mnist_resizes_on_request() -> None:
    data = datasets.mnist(real_data_dir(), image_size=32)
    assert data.train_images.shape == (60000, 1, 32, 32) and data.train_images.dtype == torch.uint8


def test_mnist_offline_error_names_folder_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [f"http://127.0.0.1:{closed_port()}/mnist/"])
    with pytest.raises(LabError) as info:
        datasets.mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "mnist") in message
    assert all(name in message for name in MNIST_NAMES)
    assert not list((tmp_path / "mnist").glob("*")), "a failed download must leave no partial files"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """Keep the test output clean."""


def test_mnist_downloads_missing_files_from_a_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = real_data_dir() / "mnist"
    served = tmp_path / "served"
    served.mkdir()
    for name in MNIST_NAMES:
        shutil.copy(source / name, served / name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: QuietHandler(*a, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dead = f"http://127.0.0.1:{closed_port()}/"
        monkeypatch.setattr(datasets, "MNIST_MIRRORS", [dead, f"http://127.0.0.1:{server.server_address[1]}/"])
        target = tmp_path / "data"
        (target / "mnist").mkdir(parents=True)
        shutil.copy(source / MNIST_NAMES[0], target / "mnist" / MNIST_NAMES[0])  # one already present
        data = datasets.mnist(target)
    finally:
        server.shutdown()
        server.server_close()
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert sorted(p.name for p in (target / "mnist").iterdir()) == sorted(MNIST_NAMES)


@pytest.mark.parametrize("unpacked", ["{stem}", "{dotted}"], ids=["plain", "dotted"])
def test_mnist_reads_unpacked_files_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unpacked: str) -> None:
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [f"http://127.0.0.1:{closed_port()}/mnist/"])
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_NAMES:  # as `gunzip` (or an unpacker that writes `train-images.idx3-ubyte`) leaves them
        stem = name.removesuffix(".gz")
        target = unpacked.format(stem=stem, dotted=stem.replace("-idx", ".idx", 1))
        (folder / target).write_bytes(gzip.decompress((real_data_dir() / "mnist" / name).read_bytes()))
    data = datasets.mnist(tmp_path)
    assert data.train_images.shape == (60000, 1, 28, 28) and int(data.test_labels[0]) == 7
    (folder / MNIST_NAMES[0].removesuffix(".gz")).unlink(missing_ok=True)
    (folder / MNIST_NAMES[0].removesuffix(".gz").replace("-idx", ".idx", 1)).unlink(missing_ok=True)
    with pytest.raises(LabError, match=r"MNIST's train-images-idx3-ubyte.gz is not in .* \(gzipped or not\)"):
        datasets.mnist(tmp_path)


def test_mnist_rejects_wrong_shapes_and_labels(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    shapes = {key: shape for key, (_, shape) in datasets.MNIST_FILES.items()}
    for name, shape in datasets.MNIST_FILES.values():
        (folder / name).write_bytes(gzip.compress(encode_idx(np.zeros(shape, np.uint8)), compresslevel=1))
    (folder / MNIST_NAMES[3]).write_bytes(encode_idx(np.full(shapes["test_labels"], 12, np.uint8)))
    with pytest.raises(LabError, match="labels above 9"):
        datasets.mnist(tmp_path)
    (folder / MNIST_NAMES[3]).write_bytes(encode_idx(np.zeros((10,), np.uint8)))
    with pytest.raises(LabError, match=r"expected uint8 \(10000,\)"):
        datasets.mnist(tmp_path)


def test_mnist_rejects_unknown_options_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="did you mean: image_size"):
        datasets.mnist(tmp_path, image_sise=32)
    with pytest.raises(LabError, match="takes no argument"):
        datasets.mnist(tmp_path, "extra")


# -- image-folder ----------------------------------------------------------------------------


def write_images(folder: Path, count: int, color: tuple[int, int, int] | int, size: tuple[int, int] = (20, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shape = size if isinstance(color, int) else (*size, 3)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), np.full(shape, color, np.uint8))


def test_image_folder_class_subfolders(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", 6, (0, 0, 255))  # BGR on disk: red
    write_images(tmp_path / "dogs", 4, (255, 0, 0))  # blue
    data = datasets.image_folder(tmp_path, str(tmp_path), image_size=16)
    assert isinstance(data, ImageDataset) and data.classes == ["cats", "dogs"]
    assert data.train_images.shape == (9, 3, 16, 16) and data.test_images.shape == (1, 3, 16, 16)
    images = torch.cat([data.train_images, data.test_images])
    labels = torch.cat([data.train_labels, data.test_labels])
    assert torch.bincount(labels).tolist() == [6, 4]
    assert (images[labels == 0, 0] == 255).all() and (images[labels == 0, 2] == 0).all(), "decoded as RGB"
    assert (images[labels == 1, 2] == 255).all()


def test_image_folder_split_is_fixed(tmp_path: Path) -> None:
    for name in "abc":
        write_images(tmp_path / name, 5, 40 * (ord(name) - 96))
    first = datasets.image_folder(tmp_path, str(tmp_path), image_size=8, test_fraction=0.2)
    second = datasets.image_folder(tmp_path, str(tmp_path), image_size=8, test_fraction=0.2)
    assert first.test_labels.tolist() == second.test_labels.tolist() and len(first.test_labels) == 3
    assert first.train_images.shape[1] == 1, "grayscale files give one channel"


def test_image_folder_train_test_layout_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data" / "shapes"
    for split, count in (("train", 3), ("val", 2)):
        write_images(root / split / "round", count, 10)
        write_images(root / split / "square", count, 200)
    monkeypatch.chdir(tmp_path)
    data = datasets.image_folder(tmp_path / "data", "shapes", image_size=12, channels=3)
    assert data.train_images.shape == (6, 3, 12, 12) and data.test_images.shape == (4, 3, 12, 12)
    assert data.test_labels.tolist() == [0, 0, 1, 1]
    assert datasets.image_folder(tmp_path / "elsewhere", "data/shapes", image_size=12).train_images.shape[0] == 6


def test_image_folder_unpaired_layout(tmp_path: Path) -> None:
    for name, count in (("trainA", 4), ("trainB", 3), ("testA", 2), ("testB", 1)):
        write_images(tmp_path / name, count, (10, 20, 30), size=(40, 24))
    data = datasets.image_folder(tmp_path, str(tmp_path), image_size=16)
    assert isinstance(data, UnpairedImageDataset)
    assert data.a.train_images.shape == (4, 3, 16, 16) and data.b.test_images.shape == (1, 3, 16, 16)
    assert data.a.train_labels is None
    assert data.a.train_images[0, :, 0, 0].tolist() == [30, 20, 10]


def test_image_folder_loose_images_are_unlabelled(tmp_path: Path) -> None:
    write_images(tmp_path, 10, (1, 2, 3))
    data = datasets.image_folder(tmp_path, str(tmp_path), image_size=8, channels=1)
    assert data.train_labels is None and data.classes == []
    assert data.train_images.shape == (9, 1, 8, 8)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="needs a folder"):
        datasets.image_folder(tmp_path, None)
    with pytest.raises(LabError, match="not found"):
        datasets.image_folder(tmp_path, "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabError, match="0 image"):
        datasets.image_folder(tmp_path, "empty")
    write_images(tmp_path / "broken" / "a", 2, 5)
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(LabError, match=r"cannot decode image .*bad\.png"):
        datasets.image_folder(tmp_path, "broken")
    for name in ("trainA", "trainB", "testA"):
        write_images(tmp_path / "half" / name, 1, 5)
    with pytest.raises(LabError, match="testB holds no images"):
        datasets.image_folder(tmp_path, "half")
    with pytest.raises(LabError, match="channels must be"):
        datasets.image_folder(tmp_path, "broken/a", channels=2)


# -- mnist-styles ----------------------------------------------------------------------------


def test_styles_keep_shape_and_order_strokes() -> None:
    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 8:20, 12:16] = 255
    assert (styles.thick(images) >= images).all() and styles.thick(images).sum() > images.sum()
    assert (styles.thin(images) <= images).all() and 0 < styles.thin(images).sum() < images.sum()
    assert torch.equal(styles.inverted(styles.inverted(images)), images)
    slanted = styles.italic(images)
    assert slanted.dtype == torch.uint8 and slanted.shape == images.shape and not torch.equal(slanted, images)


def test_style_halves_are_disjoint_and_cover() -> None:
    a, b = styles.halves(11)
    assert len(a) == 6 and len(b) == 5
    assert sorted(torch.cat([a, b]).tolist()) == list(range(11))


def test_mnist_styles_builds_two_disjoint_domains() -> None:
    data = datasets.mnist_styles(real_data_dir(), "plain-inverted")
    source = datasets.mnist(real_data_dir())
    assert isinstance(data, UnpairedImageDataset) and data.name == "mnist-styles:plain-inverted"
    assert len(data.a.train_images) + len(data.b.train_images) == 60000
    assert len(data.a.test_images) + len(data.b.test_images) == 10000
    a_idx, b_idx = styles.halves(60000)
    assert torch.equal(data.a.train_images, source.train_images[a_idx])
    assert torch.equal(data.b.train_images, 255 - source.train_images[b_idx])
    assert torch.equal(data.b.train_labels, source.train_labels[b_idx])


def test_mnist_styles_rejects_bad_pairs(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="did you mean: thick"):
        datasets.mnist_styles(tmp_path, "thin-thik")
    with pytest.raises(LabError, match="STYLE_A-STYLE_B"):
        datasets.mnist_styles(tmp_path, "thin")
    with pytest.raises(LabError, match="two different"):
        datasets.mnist_styles(tmp_path, "thin-thin")


# -- registration ----------------------------------------------------------------------------


def test_datasets_register_through_the_hook() -> None:
    from lab.run.registry import Registry

    pm = pluggy.PluginManager("lab")
    pm.add_hookspecs(hookspecs)
    pm.register(datasets, name="datasets")
    registry = Registry()
    pm.hook.register_datasets(register=lambda *a, **kw: registry.add_dataset("datasets", *a, **kw))
    assert {"mnist", "image-folder", "mnist-styles"} <= set(registry.datasets)
    assert registry.dataset_factory("mnist") is datasets.mnist
    with pytest.raises(LabError, match="did you mean: mnist"):
        registry.dataset_factory("minst")
