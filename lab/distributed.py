"""Data-parallel training under torchrun: one process per device; rank 0 alone writes.

`torchrun --nproc_per_node N -m lab train ...` starts N copies of `lab train` and gives each
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in its environment. The runner calls
`init_from_env()`, which joins them into one process group: gloo for CPU tensors and, on a
machine with CUDA, NCCL for GPU tensors (each process on cuda:LOCAL_RANK). Objects and flags
always travel on a gloo group, so they never wait on the GPU. Without torchrun's variables
nothing happens: world size 1, and every helper below returns at once.

What the ranks share and what each keeps is decided by the runner and the algorithms (see
docs/scale.md: Several processes); this module only moves data between the processes.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from lab.api import LabError

# Rank 0 evaluates agents alone while the others wait in their next collective: an evaluation
# of long Atari games must not trip the process group's timeout.
TIMEOUT = datetime.timedelta(hours=2)

_rank, _world, _local = 0, 1, 0
_control: Any = None  # the gloo group for objects and flags


def launched() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> tuple[int, int, int]:
    """Join torchrun's process group; (rank, world_size, local_rank). Idempotent."""
    global _rank, _world, _local, _control
    if not launched() or _world > 1:
        return _rank, _world, _local
    if not (dist.is_available() and dist.is_gloo_available()):
        raise LabError("this torch build has no gloo backend, so it cannot train on several processes; "
                       "run without torchrun")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=TIMEOUT)
    _control = dist.new_group(backend="gloo", timeout=TIMEOUT) if cuda else dist.group.WORLD
    _rank, _world, _local = rank, world, local
    return rank, world, local


def destroy(wait: bool = False) -> None:
    """Leave the process group (the end of `lab train` / `lab resume`).

    wait: meet, then leave in order. Tearing gloo down closes its connections, and a peer
    whose own teardown is under way when that close arrives can abort in gloo's threads
    ("terminate called without an active exception", seen in CI twice, once after a barrier
    alone). So after the barrier the other ranks leave first and count themselves out on the
    rendezvous store, and rank 0, which holds its connections open meanwhile, leaves last.
    Not after an error: the peers may never arrive."""
    global _rank, _world, _local, _control
    if _world > 1 and dist.is_initialized():
        store = dist.distributed_c10d._get_default_store() if wait else None
        if store is not None:
            dist.barrier(group=_control)
        if store is not None and _rank == 0:
            _wait_for_peers_to_leave(store, _world - 1)
        dist.destroy_process_group()
        if store is not None and _rank != 0:
            store.add(_LEFT, 1)
    _rank, _world, _local, _control = 0, 1, 0, None


_LEFT = "lab/ranks-left"
_LEAVE_WAIT_S = 120.0  # a peer slower than this to tear down is left behind rather than waited for


def _wait_for_peers_to_leave(store: Any, peers: int) -> None:
    deadline = time.monotonic() + _LEAVE_WAIT_S
    while store.add(_LEFT, 0) < peers and time.monotonic() < deadline:
        time.sleep(0.01)


def rank() -> int:
    return _rank


def world_size() -> int:
    return _world


def is_main() -> bool:
    """Rank 0: the process that makes the run directory, logs, checkpoints and prints."""
    return _rank == 0


def device_for(device: torch.device) -> torch.device:
    """This process's training device: cuda:LOCAL_RANK on GPUs (one process per GPU)."""
    if _world == 1:
        return device
    if device.type == "cuda":
        return torch.device("cuda", _local % torch.cuda.device_count())
    if device.type != "cpu":
        raise LabError(f"several processes train on CPU (gloo) or CUDA (NCCL), not {device.type}; "
                       "pass --device cpu or cuda, or run without torchrun")
    return device


def split(total: int, what: str) -> int:
    """This process's share of `total` (a global count such as --num-envs or --batch-size)."""
    if total % _world:
        raise LabError(f"{what} {total} does not split evenly over {_world} processes (it counts all of them "
                       f"together); pass a multiple of {_world}")
    return total // _world


# ------------------------------------------------------------------ collectives

def barrier() -> None:
    if _world > 1:
        dist.barrier(group=_control)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable; tensors should be on the CPU)."""
    if _world == 1:
        return obj
    box = [obj if _rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if _world == 1:
        return [obj]
    out: list[Any] = [None] * _world
    dist.all_gather_object(out, obj, group=_control)
    return out


def gather_object(obj: Any) -> list[Any] | None:
    """Every rank's `obj` in rank order on rank 0; None elsewhere."""
    if _world == 1:
        return [obj]
    out: list[Any] | None = [None] * _world if _rank == 0 else None
    dist.gather_object(obj, out, dst=0, group=_control)
    return out


def any_flag(flag: bool) -> bool:
    """True on every rank when `flag` is True on any (a stop request reaching one process)."""
    if _world == 1:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_control)
    return bool(value.item())


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over the ranks (a new tensor; `tensor` itself in one process)."""
    if _world == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / _world


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over the ranks (a new tensor; `tensor` itself in one process)."""
    if _world == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The ranks' equally shaped tensors joined along dim 0, in rank order (any dtype)."""
    if _world == 1:
        return tensor
    wide = tensor.detach().to("cpu", torch.float64)
    parts = [torch.empty_like(wide) for _ in range(_world)]
    dist.all_gather(parts, wide, group=_control)
    return torch.cat(parts).to(tensor.device, tensor.dtype)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over the ranks: one all-reduce of all of them
    flattened together (a parameter without a gradient counts as a zero gradient)."""
    if _world == 1:
        return
    grads = []
    for p in parameters:
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= _world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (identical weights to start from)."""
    if _world == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor, src=0)


def to_cpu(obj: Any) -> Any:
    """`obj` with every tensor moved to the CPU (before it is pickled to another rank)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


# ------------------------------------------------------------------ set-up in step

@contextmanager
def together() -> Iterator[None]:
    """A set-up section every rank runs; if it fails on any rank, it fails on all of them.

    The failure is reported once: rank 0 raises the LabError (its own, or the first other
    rank's, naming that rank), and the other ranks leave quietly with exit code 2. A Ctrl-C
    during set-up (SetupInterrupted) stops every rank the same way; any other exception is
    re-raised where it happened, so its traceback is shown. The section must not contain
    collectives: a rank that failed early would never join them.
    """
    if _world == 1:
        yield
        return
    try:
        yield
    except BaseException as exc:
        _agree(exc)
        raise
    _agree(None)


class QuietExit(SystemExit):
    """Leave with exit code 2: rank 0 reports the error for every rank."""

    def __init__(self) -> None:
        super().__init__(2)


def _agree(exc: BaseException | None) -> None:
    from lab.signals import SetupInterrupted

    def describe(e: BaseException | None) -> tuple[str, str] | None:
        if e is None:
            return None
        kind = "lab" if isinstance(e, LabError) else "interrupted" if isinstance(e, SetupInterrupted) else "other"
        return kind, str(e)

    outcomes = all_gather_object(describe(exc))
    failed = [(r, o) for r, o in enumerate(outcomes) if o is not None]
    if not failed:
        return
    if exc is not None and not isinstance(exc, LabError):
        raise exc  # SetupInterrupted is handled by the runner; a bug shows its own traceback
    if any(kind == "interrupted" for _, (kind, _) in failed):
        raise SetupInterrupted("a stop signal reached another process")
    if _rank == 0:
        if exc is not None:
            raise exc
        other, (kind, message) = failed[0]
        if kind == "lab":
            raise LabError(f"rank {other}: {message}")
        raise LabError(f"rank {other} failed while setting up (its traceback is above)")
    raise QuietExit()
