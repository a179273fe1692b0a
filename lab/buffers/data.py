"""A whole image dataset as one uint8 tensor on the device (airbench-style loading).

A batch is one `index_select` of a shuffled index tensor, then augmentation and
normalisation as batched tensor ops on the device: no per-sample Python, no worker
processes, no collate. When the dataset does not fit on the GPU it stays in pinned host
memory and the next batch is gathered and copied on a side stream while the current one
is used.

Everything random is a function of (seed, epoch, batch index, rank), so a run resumed
mid-epoch sees exactly the batches it would have seen.

Under torch.distributed each rank takes every world_size-th row of the epoch's shuffled
order: with a per-rank batch of B / world_size, batch k of all the ranks together is batch
k of one process with batch B, whatever the number of processes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

from lab.api import LabError
from lab.memory import allocating, tensor_bytes

Normalize = Literal["unit", "symmetric"] | tuple[tuple[float, ...], tuple[float, ...]] | None
Placement = Literal["auto", "device", "host"]
Staged = tuple[torch.Tensor, "torch.Tensor | None", torch.Tensor]


class DataBatch(NamedTuple):
    """images: float32 (B, C, H, W) on the device (uint8 when normalize=None); labels:
    int64 (B,) or None; indices: dataset rows (B,)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    indices: torch.Tensor


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class DataBuffer:
    """Shuffled, augmented, normalised batches of one dataset split.

    normalize: "unit" -> [0, 1], "symmetric" -> [-1, 1], ((mean...), (std...)) -> per-channel
    standardisation of [0, 1] values, None -> raw uint8.
    crop_padding: random crop of the original size from the image zero-padded by this much.
    flip: random horizontal flips (off for digits, where mirrored glyphs are other glyphs).
    rank / world_size: this process's shard; default from torch.distributed.
    placement: "device" keeps the data on `device`, "host" in (pinned) CPU memory, "auto"
    picks the device when the data fits in its free memory.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        device: torch.device | str,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        normalize: Normalize = "unit",
        rank: int | None = None,
        world_size: int | None = None,
        placement: Placement = "auto",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise LabError(f"the data buffer takes uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        if labels is not None and labels.shape[0] != images.shape[0]:
            raise LabError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if batch_size < 1:
            raise LabError(f"batch size must be positive, got {batch_size}")
        if placement not in ("auto", "device", "host"):
            raise LabError(f"unknown placement '{placement}'; use auto, device or host")
        default_rank, default_world = distributed_rank()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise LabError(f"rank {self.rank} is outside world size {self.world_size}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.crop_padding = crop_padding
        self.flip = flip
        self.num_samples = images.shape[0]
        self.image_shape = tuple(images.shape[1:])
        self.on_device = self._fits(images, placement)
        self._stream = None
        if self.on_device:
            nbytes = 0 if self.device.type == "cpu" else tensor_bytes(tuple(images.shape), images.dtype) + (
                0 if labels is None else tensor_bytes(tuple(labels.shape), torch.int64))
            with allocating(f"{self.num_samples:,} images of {'x'.join(map(str, self.image_shape))}", nbytes, self.device,
                            "pass a smaller --image-size, or leave placement to 'auto' (it keeps the data in "
                            "host memory when the device is short)"):
                self.images = images.to(self.device)
                self.labels = None if labels is None else labels.long().to(self.device)
        else:
            pin = self.device.type == "cuda"
            self.images = images.contiguous().pin_memory() if pin else images.contiguous()
            self.labels = None if labels is None else labels.long().contiguous()
            if pin:
                self.labels = self.labels.pin_memory() if self.labels is not None else None
                self._stream = torch.cuda.Stream(self.device)
        self._offset, self._divisor = self._normalizer(normalize, self.image_shape[0])
        self.normalize = normalize
        if len(self) == 0:
            raise LabError(
                f"{self.shard_size} samples per rank make no batch of {batch_size} with drop_last; "
                "use a smaller batch size"
            )
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out
        self._epoch_cache: tuple[int, torch.Tensor] | None = None
        self._prefetched: tuple[tuple[int, int], Staged] | None = None

    def _fits(self, images: torch.Tensor, placement: Placement) -> bool:
        if placement != "auto" or self.device.type != "cuda":
            return placement != "host"
        free, _ = torch.cuda.mem_get_info(self.device)
        return images.numel() * 2 < free  # leave at least as much again for the model

    def _normalizer(self, normalize: Normalize, channels: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(x - offset) / divisor on raw 0..255 values, as (1, C, 1, 1) tensors.

        Subtract-then-divide keeps the ends exact: 255 maps to exactly 1.0 for "unit" and
        "symmetric", which generators with tanh outputs rely on.
        """
        if normalize is None:
            return None, None
        if normalize == "unit":
            mean, std = (0.0,) * channels, (1.0,) * channels
        elif normalize == "symmetric":
            mean, std = (0.5,) * channels, (0.5,) * channels
        elif isinstance(normalize, (tuple, list)) and len(normalize) == 2:
            mean, std = (tuple(float(v) for v in part) for part in normalize)
            if len(mean) != channels or len(std) != channels:
                raise LabError(f"normalize mean/std need {channels} values each, got {normalize}")
        else:
            raise LabError(f"unknown normalize {normalize!r}; use 'unit', 'symmetric', ((mean...), (std...)) or None")
        offset = torch.tensor(mean, dtype=torch.float64).mul(255).float().view(1, -1, 1, 1)
        divisor = torch.tensor(std, dtype=torch.float64).mul(255).float().view(1, -1, 1, 1)
        return offset.to(self.device), divisor.to(self.device)

    # ------------------------------------------------------------------ sizes

    @property
    def shard_size(self) -> int:
        """Training samples per epoch on this rank (equal on every rank)."""
        return self.num_samples // self.world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        full, rest = divmod(self.shard_size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    # ---------------------------------------------------------------- batches

    def _generator(self, *keys: int) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(hash((self.seed, *keys)) & (2**62 - 1))
        return gen

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """This rank's dataset rows for `epoch`, in batch order (on the data's device)."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=self._generator(epoch))
        else:
            order = torch.arange(self.num_samples)
        indices = order[self.rank :: self.world_size][: self.shard_size].to(self.images.device)
        self._epoch_cache = (epoch, indices)
        return indices

    def _rows(self, epoch: int, position: int) -> torch.Tensor:
        size = self.batch_size
        return self.epoch_indices(epoch)[position * size : (position + 1) * size]

    def _following(self, epoch: int, position: int) -> tuple[int, int]:
        return (epoch, position + 1) if position + 1 < len(self) else (epoch + 1, 0)

    def next(self) -> DataBatch:
        """The next training batch, moving to the next epoch at the end of one.

        For algorithms that take one batch per `train_step`; `state_dict` records the
        position so a resumed run continues with the same batch. With host placement the
        following batch is copied to the device while the caller computes on this one.
        """
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        key = (self.epoch, self.position)
        if self._prefetched is not None and self._prefetched[0] == key:
            staged = self._prefetched[1]
        else:
            staged = self._stage(self._rows(*key))
        ready = self._ready(staged)
        self._prefetched = None
        if self._stream is not None:
            following = self._following(*key)
            self._prefetched = (following, self._stage(self._rows(*following)))
        self.position += 1
        return self._finish(*ready, key)

    def __iter__(self) -> Iterator[DataBatch]:
        """The rest of the current epoch (a whole one when it starts afresh)."""
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        for _ in range(len(self) - self.position):
            yield self.next()

    def ordered(self, batch_size: int | None = None) -> Iterator[DataBatch]:
        """Every row of this rank's share, in order, without augmentation (evaluation)."""
        rows = torch.arange(self.rank, self.num_samples, self.world_size, device=self.images.device)
        chunks = rows.split(batch_size or self.batch_size)
        staged = self._stage(chunks[0])
        for i in range(len(chunks)):
            ready = self._ready(staged)
            if i + 1 < len(chunks):
                staged = self._stage(chunks[i + 1])
            yield self._finish(*ready, None)

    def unsharded(self) -> DataBuffer:
        """The same data as one shard (rank 0 of 1), sharing this buffer's tensors: a look at
        the whole split from one process (rank 0's media under torchrun)."""
        whole = copy.copy(self)
        whole.rank, whole.world_size = 0, 1
        whole._epoch_cache = whole._prefetched = None
        return whole

    def state_dict(self) -> dict[str, Any]:
        """Where the buffer is (epoch, batch position, seed): a resumed run gets the same next batch."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self._epoch_cache = self._prefetched = None

    def _stage(self, rows: torch.Tensor) -> Staged:
        """Start gathering `rows` onto the device (on the copy stream when data is on the host)."""
        if self._stream is None:
            return self._gather(rows)
        with torch.cuda.stream(self._stream):
            return self._gather(rows)

    def _ready(self, staged: Staged) -> Staged:
        """Make the compute stream wait for `staged`'s copy (and keep its memory alive)."""
        if self._stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._stream)
            for tensor in staged:
                if tensor is not None:
                    tensor.record_stream(current)
        return staged

    def _gather(self, rows: torch.Tensor) -> Staged:
        """The raw uint8 rows on the training device (copied from host memory if needed)."""
        if self.on_device:
            labels = None if self.labels is None else self.labels.index_select(0, rows)
            return self.images.index_select(0, rows), labels, rows
        pin = self._stream is not None  # gather straight into pinned memory, then copy async

        def to_device(source: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
            if source is None:
                return None
            out = torch.empty((index.numel(), *source.shape[1:]), dtype=source.dtype, pin_memory=pin)
            torch.index_select(source, 0, index, out=out)
            return out.to(self.device, non_blocking=pin)

        moved_rows = (rows.pin_memory() if pin else rows).to(self.device, non_blocking=pin)
        return to_device(self.images, rows), to_device(self.labels, rows), moved_rows

    def _finish(
        self, images: torch.Tensor, labels: torch.Tensor | None, rows: torch.Tensor, key: tuple[int, int] | None
    ) -> DataBatch:
        if key is not None and (self.crop_padding or self.flip):
            images = self._augment(images, self._generator(self.rank, *key))
        if self._offset is not None:
            images = images.float().sub_(self._offset).div_(self._divisor)
        return DataBatch(images, labels, rows)

    def _augment(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random crops (after zero padding) and horizontal flips as one batched gather.

        Each output pixel's source in the padded batch is computed from per-sample row and
        column shifts (and mirrored columns), then read with a single `take`: no Python per
        sample, no boolean masks, so the GPU never waits for the host. Randomness is drawn
        on the CPU so results match across devices.
        """
        n, c, h, w = images.shape
        p = self.crop_padding
        if p:
            images = F.pad(images, (p, p, p, p))
        dev = images.device
        shifts = torch.randint(0, 2 * p + 1, (2, n, 1), generator=gen).to(dev)
        cols = torch.arange(w, device=dev).expand(n, w)
        if self.flip:
            mirrored = (torch.rand(n, 1, generator=gen) < 0.5).to(dev)
            cols = torch.where(mirrored, w - 1 - cols, cols)
        hp, wp = h + 2 * p, w + 2 * p
        rows = torch.arange(h, device=dev) + shifts[0]  # (n, h)
        starts = (torch.arange(n, device=dev).view(n, 1, 1) * (c * hp * wp)
                  + torch.arange(c, device=dev).view(1, c, 1) * (hp * wp))
        row_starts = starts.unsqueeze(3) + (rows * wp).view(n, 1, h, 1)  # (n, c, h, 1)
        index = row_starts + (cols + shifts[1]).view(n, 1, 1, w)
        return images.reshape(-1).take(index)
