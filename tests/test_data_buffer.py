"""DataBuffer: epochs, determinism, sharding, augmentation, normalisation, resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from conftest import real_data_dir
from lab.api import LabError
from lab.buffers import DataBuffer


def toy(n: int = 203, channels: int = 1, side: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=gen)
    return images, torch.arange(n)  # label = row, so every batch says which rows it holds


def epoch_rows(buf: DataBuffer) -> list[torch.Tensor]:
    return [b.labels for b in buf]


def test_epoch_covers_every_row_once_and_matches_the_images() -> None:
    images, labels = toy()
    buf = DataBuffer(images, labels, "cpu", 16, seed=3)
    assert len(buf) == 13
    batches = list(buf)
    assert len(batches) == 13 and batches[-1].images.shape[0] == 203 - 12 * 16
    rows = torch.cat([b.labels for b in batches])
    assert sorted(rows.tolist()) == list(range(203))
    assert rows.tolist() != list(range(203))  # shuffled
    for b in batches:
        torch.testing.assert_close(b.images, images[b.labels].float() / 255)
        assert torch.equal(b.indices, b.labels)


def test_deterministic_per_seed_and_new_order_each_epoch() -> None:
    images, labels = toy()
    a, b, c = (DataBuffer(images, labels, "cpu", 32, seed=s) for s in (1, 1, 2))
    first_a, first_b, first_c = (torch.cat(epoch_rows(x)) for x in (a, b, c))
    assert torch.equal(first_a, first_b) and not torch.equal(first_a, first_c)
    second_a = torch.cat(epoch_rows(a))
    assert not torch.equal(first_a, second_a) and sorted(second_a.tolist()) == list(range(203))
    assert a.epoch == 1


def test_drop_last_and_next_rolls_over_epochs() -> None:
    images, labels = toy(50)
    buf = DataBuffer(images, labels, "cpu", 16, drop_last=True, seed=0)
    assert len(buf) == 3
    seen = [buf.next().labels for _ in range(7)]
    assert all(s.numel() == 16 for s in seen)
    assert buf.epoch == 2 and buf.position == 1
    fresh = DataBuffer(images, labels, "cpu", 16, drop_last=True, seed=0)
    assert torch.equal(torch.cat(seen[:3]), torch.cat(epoch_rows(fresh)))
    with pytest.raises(LabError, match="smaller batch"):
        DataBuffer(images, labels, "cpu", 64, drop_last=True)


def test_resume_mid_epoch_gives_the_same_batches() -> None:
    images, labels = toy()
    kwargs = dict(seed=5, crop_padding=2, flip=True)
    run = DataBuffer(images, labels, "cpu", 16, **kwargs)
    for _ in range(20):
        run.next()
    state = run.state_dict()
    resumed = DataBuffer(images, labels, "cpu", 16, **kwargs)
    resumed.load_state_dict(state)
    for _ in range(10):
        x, y = run.next(), resumed.next()
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)


def test_shards_are_disjoint_equal_and_cover() -> None:
    images, labels = toy(101)
    shards = [DataBuffer(images, labels, "cpu", 8, seed=4, rank=r, world_size=3) for r in range(3)]
    rows = [torch.cat(epoch_rows(s)) for s in shards]
    assert {r.numel() for r in rows} == {33} and {len(s) for s in shards} == {5}
    together = torch.cat(rows).tolist()
    assert len(set(together)) == 99
    ordered = torch.cat([torch.cat([b.labels for b in s.ordered()]) for s in shards])
    assert sorted(ordered.tolist()) == list(range(101))  # evaluation drops nothing
    with pytest.raises(LabError):
        DataBuffer(images, labels, "cpu", 8, rank=3, world_size=3)


def test_ordered_pass_is_in_order_and_unaugmented() -> None:
    images, labels = toy(45)
    buf = DataBuffer(images, labels, "cpu", 8, crop_padding=3, flip=True, normalize="symmetric")
    batches = list(buf.ordered(batch_size=20))
    assert [b.images.shape[0] for b in batches] == [20, 20, 5]
    out = torch.cat([b.images for b in batches])
    torch.testing.assert_close(out, images.float() / 127.5 - 1)
    assert out.min() >= -1 and out.max() <= 1


def brute_force_augment(image: torch.Tensor, out: torch.Tensor, pad: int, flip: bool) -> bool:
    """Whether `out` is some crop (and maybe mirror) of the zero-padded `image`."""
    padded = F.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[-2:]
    candidates = [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    if flip:
        candidates += [c.flip(-1) for c in candidates]
    return any(torch.equal(c, out) for c in candidates)


@pytest.mark.parametrize("pad,flip", [(2, False), (0, True), (3, True)])
def test_augmentation_is_a_crop_of_the_padded_image(pad: int, flip: bool) -> None:
    images, labels = toy(64, channels=3, side=7)
    buf = DataBuffer(images, labels, "cpu", 64, crop_padding=pad, flip=flip, normalize=None, seed=1)
    batch = buf.next()
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (64, 3, 7, 7)
    changed = 0
    for out, row in zip(batch.images, batch.labels, strict=True):
        assert brute_force_augment(images[row], out, pad, flip)
        changed += not torch.equal(out, images[row])
    assert changed > 16  # shifts and flips really vary per sample (flip alone: about half)


def test_mean_std_normalisation_and_bad_options() -> None:
    images, labels = toy(10, channels=2)
    mean, std = (0.2, 0.6), (0.5, 0.25)
    buf = DataBuffer(images, labels, "cpu", 10, normalize=(mean, std), shuffle=False)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    torch.testing.assert_close(buf.next().images, expected)
    with pytest.raises(LabError, match="2 values"):
        DataBuffer(images, labels, "cpu", 4, normalize=((0.5,), (0.5,)))
    with pytest.raises(LabError, match="uint8"):
        DataBuffer(images.float(), labels, "cpu", 4)
    with pytest.raises(LabError, match="placement"):
        DataBuffer(images, labels, "cpu", 4, placement="gpu")  # type: ignore[arg-type]


def test_host_placement_gives_the_same_batches() -> None:
    images, _labels = toy()
    on_device = DataBuffer(images, None, "cpu", 32, seed=2, crop_padding=1, placement="device")
    on_host = DataBuffer(images, None, "cpu", 32, seed=2, crop_padding=1, placement="host")
    assert on_device.on_device and not on_host.on_device
    for a, b in zip(on_device, on_host, strict=True):
        assert a.labels is None and torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)


def _distributed_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        images, labels = toy(64)
        buf = DataBuffer(images, labels, "cpu", 8, seed=9)  # rank and world size from torch.distributed
        torch.save({"rank": buf.rank, "rows": torch.cat(epoch_rows(buf))}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two fresh processes import torch: ~5-15 s
def test_shards_by_rank_under_torch_distributed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_distributed_worker, args=(2, port, str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    assert [r["rank"] for r in results] == [0, 1]
    rows = torch.cat([r["rows"] for r in results]).tolist()
    assert sorted(rows) == list(range(64))


def test_mnist_epoch_when_available() -> None:
    from lab.plugins.datasets import read_mnist

    arrays = read_mnist(real_data_dir() / "mnist")
    buf = DataBuffer(arrays["train_images"].unsqueeze(1), arrays["train_labels"].long(), "cpu", 128,
                     normalize=((0.1307,), (0.3081,)))
    assert len(buf) == 469
    total, mean = 0, 0.0
    for batch in buf:
        total += batch.labels.numel()
        mean += batch.images.sum().item()
    assert total == 60000
    assert abs(mean / (total * 28 * 28)) < 1e-3  # MNIST's own mean and std standardise it
