"""Replay contents in checkpoint chunk files (lab.run.chunks): a save writes only the chunks
the ring wrote since the last one, a crash never leaves latest.pt naming a missing chunk, and
what is restored is the buffer that was saved."""

from __future__ import annotations

import pytest
import torch

from lab.api import LabError
from lab.buffers import ReplayBuffer
from lab.run import chunks
from lab.run.chunks import ChunkStore

SLOTS, ENVS, CHUNK_ROWS = 500, 2, 50


def buffer(seed: int = 0, prioritized: bool = False) -> ReplayBuffer:
    return ReplayBuffer(SLOTS * ENVS, (3,), ENVS, "cpu", n_step=3, prioritized=prioritized,
                        observation_dtype=torch.float32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of CHUNK_ROWS slots, so a few hundred steps span several."""
    rb = buffer()
    row_bytes = sum(t[0].numel() * t.element_size() for t in rb.state_dict()["rows"]["tensors"].values())
    monkeypatch.setattr(chunks, "CHUNK_BYTES", row_bytes * CHUNK_ROWS)


def fill(rb: ReplayBuffer, start: int, stop: int) -> None:
    """Steps start..stop-1 of two envs whose episodes last 7 and 11 steps."""
    for t in range(start, stop):
        obs = torch.tensor([[t, 0, 0], [t, 1, 0]], dtype=torch.float32)
        ends = torch.tensor([t % 7 == 6, t % 11 == 10])
        actions, rewards = torch.tensor([t % 4, (t + 1) % 4]), torch.tensor([1.0, -1.0]) * t
        rb.add(obs, actions, rewards, obs + 1, ends, torch.zeros(2, dtype=torch.bool))


def same_contents(a: ReplayBuffer, b: ReplayBuffer) -> None:
    ours, theirs = a.state_dict()["rows"]["tensors"], b.state_dict()["rows"]["tensors"]
    for (name, x), y in zip(ours.items(), theirs.values(), strict=True):
        torch.testing.assert_close(x, y, msg=name)
    for x, y in zip(a.sample(64), b.sample(64), strict=True):
        torch.testing.assert_close(x, y)


def save(store: ChunkStore, rb: ReplayBuffer, commit: bool = True) -> dict:
    state = store.spill({"algorithm": {"buffers": rb.state_dict()}})
    if commit:
        store.commit()
    return state


def test_a_save_rewrites_only_the_chunks_written_since_the_last(tmp_path) -> None:
    rb, store = buffer(), ChunkStore(tmp_path)
    fill(rb, 0, 120)
    first = save(store, rb)["algorithm"]["buffers"]["rows"]["chunks"]
    assert len(first) == 3 and sorted(p.name for p in tmp_path.glob("*.pt")) == sorted(first)
    fill(rb, 120, 150)  # slots 120..149, and the n-step window before them: chunk 2 only
    second = save(store, rb)["algorithm"]["buffers"]["rows"]["chunks"]
    assert second[:2] == first[:2] and second[2] != first[2], "unchanged chunks are not written again"
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == sorted(second), "the replaced chunk file is gone"
    fill(rb, 150, 180)  # crosses into chunk 3
    third = save(store, rb)
    assert third["algorithm"]["buffers"]["rows"]["chunks"][:2] == first[:2]
    restored = buffer()
    restored.load_state_dict(ChunkStore(tmp_path).restore(third)["algorithm"]["buffers"], end_episodes=False)
    same_contents(rb, restored)


def test_the_ring_wrapping_around_is_saved_and_restored(tmp_path) -> None:
    rb, store = buffer(prioritized=True), ChunkStore(tmp_path)
    fill(rb, 0, 450)
    save(store, rb)
    batch = rb.sample(32)
    rb.update_priorities(batch.indices, torch.rand(32, generator=torch.Generator().manual_seed(3)) + 0.1)
    fill(rb, 450, 530)  # wraps: slots 450..499 and 0..29 change (and the n-step window before 450)
    state = save(store, rb)
    names = state["algorithm"]["buffers"]["rows"]["chunks"]
    assert all(".at450." in name for name in names[1:8]) and all(".at530." in names[k] for k in (0, 8, 9))
    restored = buffer(prioritized=True)
    restored.load_state_dict(ChunkStore(tmp_path).restore(state)["algorithm"]["buffers"], end_episodes=False)
    torch.testing.assert_close(restored.tree.leaves, rb.tree.leaves)  # priorities change anywhere: saved whole
    same_contents(rb, restored)


def test_a_crash_between_chunks_and_latest_pt_leaves_the_old_checkpoint_whole(tmp_path) -> None:
    rb, store = buffer(), ChunkStore(tmp_path)
    fill(rb, 0, 120)
    old = save(store, rb)
    twin = buffer()
    twin.load_state_dict(rb.state_dict(), end_episodes=False)
    fill(rb, 120, 260)
    save(store, rb, commit=False)  # killed before latest.pt was replaced: the old one still counts
    restored = buffer()
    restored.load_state_dict(ChunkStore(tmp_path).restore(old)["algorithm"]["buffers"], end_episodes=False)
    same_contents(twin, restored)
    store.commit()  # the next complete save removes what the old checkpoint no longer names
    assert len(list(tmp_path.glob("*.pt"))) == 6


def test_a_missing_chunk_is_one_line_naming_the_folder(tmp_path) -> None:
    rb, store = buffer(), ChunkStore(tmp_path)
    fill(rb, 0, 120)
    state = save(store, rb)
    next(tmp_path.glob("*.pt")).unlink()
    with pytest.raises(LabError, match="put back the run's whole checkpoints/ folder"):
        ChunkStore(tmp_path).restore(state)
