"""Random streams owned by the runner, so a resumed run continues every one of them.

`RNGStreams` hands out named torch generators derived from the run seed (never from each
other or from call order), keeps them registered, and saves/restores them with the
checkpoint together with the global python, numpy and torch states. Evaluation runs
inside `RNGStreams.evaluation(step)`: the global states and every registered stream are
put back afterwards, so evaluating never changes what training draws next, and the
evaluation's own randomness (its env seeds, `eval_generator`) derives from
(run seed, global_step), so each evaluation plays new episodes.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

EVALUATION = "evaluation"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Python's, numpy's and torch's global random state and torch's CPU thread count as
    they were before the block, whatever it seeds or sets (loading a run inside another)."""
    state, threads = rng_state(), torch.get_num_threads()
    try:
        yield
    finally:
        set_rng_state(state)
        torch.set_num_threads(threads)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed that depends on `seed` and every key (names hashed stably, not by `hash`)."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form torch.load(weights_only=True) accepts."""
    legacy = np.random.get_state(legacy=True)
    if not isinstance(legacy, tuple):  # the global RandomState was given another bit generator
        raise TypeError(f"numpy's global random state is not MT19937's, cannot save it: {legacy.get('bit_generator')}")
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached), "kind": str(kind)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStreams:
    """Named generators of one run (and one rank), registered for checkpoints."""

    def __init__(self, seed: int, device: torch.device, rank: int = 0) -> None:
        self.seed = int(seed)
        self.device = torch.device(device)
        self.rank = rank
        self._streams: dict[str, torch.Generator] = {}
        self._pending: dict[str, torch.Tensor] = {}  # restored before the stream was asked for
        self._eval_step = 0
        self._eval: dict[str, torch.Generator] = {}
        self._restart: tuple[str, int] | None = None  # set by `restart`: new streams since that step

    def _seed(self, name: str) -> int:
        return derive_seed(self.seed, name, self.rank, *(self._restart or ()))

    def _key(self, name: str, device: torch.device) -> str:
        return name if device == self.device else f"{name}@{device}"

    def generator(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """The stream `name` on `device` (default: the run's): the same object on every call."""
        device = torch.device(device) if device is not None else self.device
        key = self._key(name, device)
        if key not in self._streams:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._seed(name))
            if key in self._pending:
                gen.set_state(self._pending.pop(key))
            self._streams[key] = gen
        return self._streams[key]

    def restart(self, step: int) -> None:
        """Start every stream and the global states afresh from (run seed, name, rank, step).

        For a run resumed on another number of processes: the saved streams belonged to other
        ranks, so each rank starts new ones, as its training envs start new episodes.
        """
        self._restart = ("restart", int(step))
        self._pending.clear()
        for key, gen in self._streams.items():
            gen.manual_seed(self._seed(key.split("@")[0]))
        seed_everything(derive_seed(self.seed, "global", self.rank, *self._restart) % 2**32)

    def seed_for(self, name: str, step: int = 0) -> int:
        """A seed for something that takes integers (an env reset) from (run seed, name, step)."""
        return derive_seed(self.seed, name, self.rank, step) % 2**31

    def eval_generator(self, device: torch.device | str | None = None) -> torch.Generator:
        """Randomness for acting in evaluation (e.g. epsilon 0.05): fresh for each evaluation,
        a function of (run seed, global_step), never a training stream."""
        device = torch.device(device) if device is not None else self.device
        key = str(device)
        if key not in self._eval:
            gen = torch.Generator(device=device)
            gen.manual_seed(derive_seed(self.seed, EVALUATION, self.rank, self._eval_step))
            self._eval[key] = gen
        return self._eval[key]

    @contextmanager
    def evaluation(self, step: int) -> Iterator[None]:
        """Evaluate at `step` without touching training's randomness.

        Inside, the global RNGs are seeded from (run seed, step); afterwards they and every
        registered stream are back where they were.
        """
        saved_global = rng_state()
        saved_streams = {key: gen.get_state() for key, gen in self._streams.items()}
        self._eval_step = step
        self._eval.clear()
        seed_everything(derive_seed(self.seed, EVALUATION, "global", self.rank, step) % 2**32)
        try:
            yield
        finally:
            set_rng_state(saved_global)
            for key, state in saved_streams.items():
                self._streams[key].set_state(state)

    def state_dict(self) -> dict[str, Any]:
        return {"streams": {**self._pending, **{k: g.get_state() for k, g in self._streams.items()}},
                "global": rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, saved in state.get("streams", {}).items():
            if key in self._streams:
                self._streams[key].set_state(saved)
            else:
                self._pending[key] = saved
        if "global" in state:
            set_rng_state(state["global"])
