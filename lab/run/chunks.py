"""Replay memories saved beside latest.pt in chunk files: a checkpoint writes what changed.

An Atari replay of 1M transitions is 7 GB; rewritten whole at every checkpoint it made a
run folder's checkpoints cost more than its training. State that is a ring of slots (a
replay buffer's contents) is marked with `lab.api.state.rows_state(tensors, steps, margin)`; on save,
`ChunkStore.spill` cuts each marked subtree into chunks of about CHUNK_BYTES, writes
(atomically) only the chunks whose slots the ring wrote since the previous save, and puts a
manifest naming the chunk files in the subtree's place, so latest.pt stays small. Chunk
files are named by the step they were written at, never rewritten in place: until the new
latest.pt is in place the old one names only files that still exist, and `commit` (after
it) deletes the files no manifest names. A crash at any point leaves latest.pt and every
chunk it names; the orphans go at the next save.
"""

from __future__ import annotations

import functools
import math
import pickle
from pathlib import Path
from typing import Any

import torch

from lab.api import LabError
from lab.api.state import ROWS
from lab.atomic import atomic_write
from lab.run.rundir import after_failed_save

CHUNK_BYTES = 32 * 2**20
FOLDER = "replay"  # beside latest.pt: checkpoints/replay/


def is_manifest(node: Any) -> bool:
    return isinstance(node, dict) and ROWS in node and "chunks" in node


def _changed_chunks(previous: dict[str, Any] | None, slots: int, chunk_rows: int, names: list[str],
                    steps: int, margin: int) -> set[int] | None:
    """Chunks the ring wrote since `previous` was saved; None: all of them."""
    if previous is None or (previous["slots"], previous["chunk_rows"], previous["names"]) != (slots, chunk_rows, names) \
            or previous["steps"] > steps:
        return None
    start = max(0, previous["steps"] - margin)
    if steps - start >= slots:
        return None
    first, last = start % slots, (steps - 1) % slots if steps > start else None
    if last is None:
        return set()
    spans = [(first, last)] if first <= last else [(first, slots - 1), (0, last)]
    return {k for lo, hi in spans for k in range(lo // chunk_rows, hi // chunk_rows + 1)}


class ChunkStore:
    """The chunk files of one run's checkpoints (`checkpoints/replay/`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: dict[str, dict[str, Any]] = {}  # subtree path -> manifest latest.pt holds
        self._pending: dict[str, dict[str, Any]] = {}

    def spill(self, state: dict[str, Any]) -> dict[str, Any]:
        """A copy of `state` with every rows subtree replaced by its manifest; writes the
        chunks that changed. Call `commit()` once the returned state is written."""
        self._pending = {}

        def replace(node: Any, path: str) -> Any:
            if isinstance(node, dict):
                if ROWS in node and "tensors" in node:
                    self._pending[path] = self._save(path, node)
                    return self._pending[path]
                return {k: replace(v, f"{path}.{k}") for k, v in node.items()}
            if isinstance(node, list):
                return [replace(v, f"{path}.{i}") for i, v in enumerate(node)]
            return node

        spilled: dict[str, Any] = replace(state, "state")  # a dict comes back a dict
        return spilled

    def _save(self, path: str, node: dict[str, Any]) -> dict[str, Any]:
        tensors: dict[str, torch.Tensor] = node["tensors"]
        names = sorted(tensors)
        slots = int(next(iter(tensors.values())).shape[0])
        row_bytes = sum(t[0].numel() * t.element_size() for t in tensors.values()) or 1
        chunk_rows = max(1, CHUNK_BYTES // row_bytes)
        steps, margin = node["steps"], node["margin"]
        filled = min(steps, slots)
        previous = self.saved.get(path)
        changed = _changed_chunks(previous, slots, chunk_rows, names, steps, margin)
        count = math.ceil(filled / chunk_rows)
        chunks = list(previous["chunks"][:count]) if previous is not None and changed is not None else []
        chunks += [""] * (count - len(chunks))
        # a refused write reads as latest.pt's own (the chunks are part of the checkpoint)
        refused = ("write checkpoint", "move the run folder where there is room",
                   after_failed_save(self.folder.parent.parent))
        for k in range(count):
            if changed is None or k in changed or not chunks[k]:
                rows = slice(k * chunk_rows, min((k + 1) * chunk_rows, filled))
                part = {name: tensors[name][rows].to("cpu", copy=True) for name in names}
                chunks[k] = f"{path.removeprefix('state.')}.{k:05d}.at{steps}.pt"
                atomic_write(self.folder / chunks[k], functools.partial(torch.save, part), *refused)
        return {ROWS: 1, "chunks": chunks, "slots": slots, "chunk_rows": chunk_rows, "names": names,
                "steps": steps, "margin": margin, "filled": filled}

    def commit(self) -> None:
        """The spilled state is written: its manifests are now latest.pt's; other chunk files go."""
        self.saved = self._pending
        keep = {name for manifest in self.saved.values() for name in manifest["chunks"]}
        if self.folder.is_dir():
            for file in self.folder.glob("*.pt"):
                if file.name not in keep:
                    file.unlink(missing_ok=True)

    def restore(self, state: dict[str, Any], map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """`state` (as latest.pt holds it) with every manifest replaced by the rows it names,
        read from the chunk files; the manifests become the base of the next save."""
        found: dict[str, dict[str, Any]] = {}

        def replace(node: Any, path: str) -> Any:
            if is_manifest(node):
                found[path] = node
                return self._load(node, map_location)
            if isinstance(node, dict):
                return {k: replace(v, f"{path}.{k}") for k, v in node.items()}
            if isinstance(node, list):
                return [replace(v, f"{path}.{i}") for i, v in enumerate(node)]
            return node

        restored: dict[str, Any] = replace(state, "state")  # a dict comes back a dict
        self.saved = found
        return restored

    def _load(self, manifest: dict[str, Any], map_location: str | torch.device) -> dict[str, Any]:
        parts = [self._read(name, map_location) for name in manifest["chunks"]]
        tensors = {name: torch.cat([part[name] for part in parts]) for name in manifest["names"]} if parts else {}
        return {ROWS: 1, "tensors": tensors, "steps": manifest["steps"], "margin": manifest["margin"]}

    def _read(self, name: str, map_location: str | torch.device) -> dict[str, torch.Tensor]:
        path = self.folder / name
        try:
            part = torch.load(path, map_location=map_location, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
            reason = "missing" if not path.is_file() else f"unreadable: {str(exc).splitlines()[0][:80]}"
            raise _incomplete(path, reason) from None
        if not isinstance(part, dict):
            raise _incomplete(path, f"not a chunk of rows but a {type(part).__name__}")
        return part


def _incomplete(path: Path, reason: str) -> LabError:
    """However a chunk file failed, the fix is the same: the whole checkpoints/ folder back."""
    return LabError(f"the replay memory saved with latest.pt is incomplete ({path} is {reason}); put back the "
                    "run's whole checkpoints/ folder, or start a new run")

