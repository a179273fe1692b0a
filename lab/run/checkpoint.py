"""Checkpoints: written atomically (temp file + rename), read with weights_only=True, and
put back into an algorithm."""

from __future__ import annotations

import pickle
import re
import textwrap
from pathlib import Path
from typing import Any

import torch

from lab.api import Algorithm, LabError
from lab.atomic import atomic_write
from lab.run.chunks import FOLDER as CHUNK_FOLDER
from lab.run.chunks import ChunkStore
from lab.run.rundir import NEVER_CHECKPOINTED, after_failed_save, has_checkpoint, train_again

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours parts of its weights_only message


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` so that `path` always holds either the old or the new complete file; a
    disk that is full or read-only is one LabError (the older file stays as it was)."""
    state = compact(state)
    atomic_write(path, lambda handle: torch.save(state, handle), "write checkpoint",
                 "move the run folder where there is room", after_failed_save(path.parent.parent))


def compact(value: Any) -> Any:
    """`value` with every tensor that is a view of a larger storage copied out: torch.save
    writes a view's whole storage, so a population member's weights (rows of the population's
    stacked tensor, `lab.rl.population`) would otherwise carry every member's."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.untyped_storage().nbytes() > value.numel() * value.element_size() else value
    if isinstance(value, dict):
        items = {key: compact(item) for key, item in value.items()}
        if all(items[key] is item for key, item in value.items()):
            return value
        copied = value.copy()  # (keeps an OrderedDict's type; a state_dict's _metadata goes along)
        copied.update(items)
        if hasattr(value, "_metadata"):
            copied._metadata = value._metadata  # type: ignore[attr-defined]
        return copied
    if isinstance(value, list):
        return [compact(item) for item in value]
    return value


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing or corrupt file is a LabError naming the fix: the
    run's other checkpoint where it has one."""
    other = _other_checkpoint(path)
    if not path.is_file():
        run_dir = path.parent.parent
        if path.parent.name == "checkpoints" and (run_dir / "config.yaml").is_file() and not has_checkpoint(run_dir):
            raise LabError(f"run '{run_dir}' {NEVER_CHECKPOINTED}; {train_again(run_dir)}")
        fix = f"use {other}" if other else "the run has no saved state to continue from"
        raise LabError(f"checkpoint '{path}' does not exist; {fix}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
        text = _ANSI.sub("", str(exc)).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        detail = textwrap.shorten(first, width=120, placeholder=" ...")  # at a word boundary
        raise LabError(
            f"checkpoint '{path}' is corrupt or unreadable ({detail}); "
            f"restore it from a backup{f' or use {other}' if other else ' (the run has no other checkpoint)'}"
        ) from None
    if not isinstance(state, dict) or "algorithm" not in state or "global_step" not in state:
        raise LabError(f"checkpoint '{path}' is not an arcade-lab checkpoint (missing keys); use a file the lab wrote")
    return state


def _other_checkpoint(path: Path) -> str | None:
    """The run's other checkpoint (best.pt for latest.pt and the reverse) where it exists, as
    the advice names it: `checkpoints/best.pt (--checkpoint best)`."""
    others = {"latest.pt": "best.pt", "best.pt": "latest.pt"}
    if path.parent.name != "checkpoints" or path.name not in others or not (path.parent / others[path.name]).is_file():
        return None
    other = others[path.name]
    return f"checkpoints/{other} (--checkpoint {other.removesuffix('.pt')})"


def checkpoint_step(run_dir: Path) -> int | None:
    """The global_step of checkpoints/latest.pt, read without loading its tensors (mmap)."""
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:
        return None


def saved_horizon(state: dict[str, Any], default: int) -> int:
    """The schedule horizon a checkpoint was trained with (checkpoints before the runner
    kept it hold it in the algorithm's state)."""
    horizon = state.get("runner", {}).get("horizon") or state.get("algorithm", {}).get("horizon")
    return int(horizon) if horizon else default


class CheckpointWriter:
    """checkpoints/latest.pt (and best.pt) of one run directory. The replay contents a state
    marks (`lab.api.state.rows_state`) go to chunk files beside latest.pt, only the chunks
    written since the last save (`lab.run.chunks`); best.pt, for evaluation, leaves the
    replay and rollout contents out."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = run_dir / "checkpoints"
        self.chunks = ChunkStore(self.folder / CHUNK_FOLDER)

    @property
    def latest(self) -> Path:
        return self.folder / "latest.pt"

    def write(self, state: dict[str, Any], best: bool) -> Path:
        """Write `state` as latest.pt (and best.pt); returns latest.pt's path."""
        state = self.chunks.spill(state)
        save_checkpoint(state, self.latest)
        self.chunks.commit()
        if best:
            lean = {**state, "algorithm": {k: v for k, v in state["algorithm"].items() if k != "buffers"}}
            save_checkpoint(lean, self.folder / "best.pt")
        return self.latest

    def read_chunks(self, state: dict[str, Any]) -> dict[str, Any]:
        """`state` with the replay contents its manifests name read back from the chunk files."""
        return self.chunks.restore(state)


def load_algorithm_state(algo: Algorithm, state: dict[str, Any], run_dir: Path) -> None:
    """`algo.load_state_dict(state)`, where a state that does not fit the algorithm's settings
    (config.yaml edited after training) is one LabError naming the likely cause."""
    try:
        algo.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = (lines[1] if len(lines) > 1 else lines[0])[:200]  # torch's first line only names the module
        raise LabError(f"the checkpoint does not fit {algo.name} with the settings of {run_dir}/config.yaml "
                       f"({type(exc).__name__}: {detail}); was config.yaml edited after training (net_arch, ...)? "
                       "put the setting back") from None


def restart_note(env: str | None, saved_world: int, world: int, restarted: bool) -> str:
    """What a resume could not continue exactly: envs that cannot save their state start new
    episodes; on another number of processes each one's random streams start afresh."""
    if saved_world == world:
        return (f"note: {env} cannot save its state, so its training envs start new episodes (seeded from the run "
                "seed and this step); weights, optimizer, buffers and random streams continue exactly "
                "(docs/runs.md: Exact resume)")
    kept = "weights, optimizer and normalisation statistics continue" if restarted else \
        "weights, optimizer and the data position continue (the batches of all processes together do not depend " \
        "on their number)"
    return (f"note: the checkpoint was written by {saved_world} process{'es' * (saved_world > 1)} and this run has "
            f"{world}: {'the training envs start new episodes and ' * restarted}each process's random streams "
            f"start afresh (seeded from the run seed, its rank and this step); {kept} (docs/scale.md: Several "
            "processes)")
