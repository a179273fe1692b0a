"""Replay memory and sampling speed: lab.buffers.ReplayBuffer against SB3's ReplayBuffer.

Atari shape (4x84x84 uint8 stacks, 18 actions). Bytes per transition are read from the
storage each buffer actually allocated (tensor/array sizes over capacity), not from a
formula. Sampling: batches of 32 per second from buffers filled with the same episodes,
timed in alternating rounds, each side ending with the same usable batch: SB3's `sample`
returns fresh tensors on the device, while the lab's returns observations and
next_observations as two overlapping strided views of one gathered window (their copy
happens later, inside the network), so the lab's side includes materialising both as
contiguous tensors.

`--load N` runs N busy processes beside both sides, as on a machine that is rarely idle.

Usage: python bench/replay_memory.py [--json] [--device cpu|cuda] [--capacity N] [--fill N] [--threads N] [--load N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch
from _machine import add_load_option, busy_processes, describe
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer

from lab.buffers import ReplayBuffer

SHAPE = (4, 84, 84)
ACTIONS = 18


def sb3_bytes(buffer: SB3ReplayBuffer) -> int:
    arrays = [buffer.observations, buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    if not buffer.optimize_memory_usage:
        arrays.append(buffer.next_observations)
    return sum(a.nbytes for a in arrays)


def memory(capacity: int, device: str) -> dict[str, float]:
    obs_space, act_space = spaces.Box(0, 255, SHAPE, np.uint8), spaces.Discrete(ACTIONS)
    ours = ReplayBuffer(capacity, SHAPE, 1, device, frame_stack=4)
    per = ReplayBuffer(capacity, SHAPE, 1, device, frame_stack=4, prioritized=True)
    sb3 = SB3ReplayBuffer(capacity, obs_space, act_space, "cpu")
    sb3_opt = SB3ReplayBuffer(capacity, obs_space, act_space, "cpu", optimize_memory_usage=True,
                              handle_timeout_termination=False)
    result = {
        "bytes_per_transition": ours.storage_bytes / ours.capacity,
        "prioritized_bytes_per_transition": per.storage_bytes / per.capacity,
        "sb3_bytes_per_transition": sb3_bytes(sb3) / capacity,
        "sb3_optimized_bytes_per_transition": sb3_bytes(sb3_opt) / capacity,
    }
    del ours, per, sb3, sb3_opt
    return result


def fill(steps: int, device: str) -> tuple[ReplayBuffer, SB3ReplayBuffer]:
    """The same episodes (random frames, ends every ~400 steps) into both buffers.

    Ours sees the lab's NEXT_STEP stream (an autoreset step after each end); SB3 sees its
    own same-step stream with the final observation as next_obs.
    """
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(512, 84, 84), dtype=np.uint8)
    ours = ReplayBuffer(steps + steps // 300 + 8, SHAPE, 1, device, frame_stack=4,
                        generator=torch.Generator(device).manual_seed(0))
    sb3 = SB3ReplayBuffer(steps, spaces.Box(0, 255, SHAPE, np.uint8), spaces.Discrete(ACTIONS), device)
    no = torch.zeros(1, dtype=torch.bool)
    frame = 0

    def new_stack() -> deque:
        nonlocal frame
        frame += 1
        return deque([pool[frame % 512]] * 4, maxlen=4)

    stack = new_stack()
    for t in range(steps):
        obs = np.stack(stack)[None]
        frame += 1
        stack.append(pool[frame % 512])
        next_obs = np.stack(stack)[None]
        action, reward = np.array([[t % ACTIONS]]), np.array([1.0], np.float32)
        end = t % 400 == 399
        term = torch.tensor([end])
        ours.add(torch.from_numpy(obs).to(device), torch.from_numpy(action[0]).to(device), torch.from_numpy(reward).to(device),
                 torch.from_numpy(next_obs).to(device), term.to(device), no.to(device))
        sb3.add(obs, next_obs, action, reward, np.array([end]), [{}])
        if end:  # the lab's autoreset step carries the final observation; then a new episode
            ours.add(torch.from_numpy(next_obs).to(device), torch.zeros(1, dtype=torch.long, device=device),
                     torch.zeros(1, device=device), torch.from_numpy(next_obs).to(device), no.to(device), no.to(device))
            stack = new_stack()
    return ours, sb3


def lab_batch(buffer: ReplayBuffer, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampled batch with contiguous observation and next_observation tensors, as SB3 returns."""
    batch = buffer.sample(batch_size)
    return batch.observations.contiguous(), batch.next_observations.contiguous()


def same_kind(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device) and a.is_contiguous() and b.is_contiguous()


def rate(sample: Callable[[], object], seconds: float, sync: Callable[[], None]) -> float:
    sample()
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            sample()
        count += 10
    sync()
    return count / (time.perf_counter() - start)


def sampling(steps: int, device: str, rounds: int, seconds: float, pinned_threads: bool = False) -> dict[str, float]:
    """Both sides' batches per second. Unless `--threads` pins them, the lab's side adjusts its
    threads to what other processes leave free before each batch, as a run does
    (`lab.device.SharedCores`); SB3's keeps torch's default, as its users get it."""
    from lab.device import SharedCores

    threads = torch.get_num_threads()
    cores = SharedCores(threads) if device == "cpu" and not pinned_threads and threads > 1 else None

    def lab_side() -> object:
        if cores is not None:
            cores.adjust()
        return lab_batch(ours, 32)

    ours, sb3 = fill(steps, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    np.random.seed(0)
    peer = sb3.sample(32)
    for ours_tensor, sb3_tensor in zip(lab_batch(ours, 32), (peer.observations, peer.next_observations), strict=True):
        if not same_kind(ours_tensor, sb3_tensor):
            raise AssertionError("the two sides must produce the same kind of batch")
    ours_rates, sb3_rates = [], []
    for _ in range(rounds):
        if cores is not None:
            torch.set_num_threads(cores.threads)
        ours_rates.append(rate(lab_side, seconds, sync))
        torch.set_num_threads(threads)
        sb3_rates.append(rate(lambda: sb3.sample(32), seconds, sync))
    return {
        "sample_batches_per_s": statistics.median(ours_rates),
        "sb3_sample_batches_per_s": statistics.median(sb3_rates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output too)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--capacity", type=int, default=100_000, help="capacity for the memory figures")
    parser.add_argument("--fill", type=int, default=20_000, help="transitions stored for the sampling figures")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per round and buffer")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both, pinned (default: as a run and as SB3 choose)")
    add_load_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with busy_processes(args.load):
        machine = describe(args.device)
        timed = sampling(args.fill, args.device, args.rounds, args.seconds, bool(args.threads))
    result = {
        **memory(args.capacity, args.device),
        **timed,
        "load": args.load,
        "batch_size": 32,
        "capacity": args.capacity,
        "fill": args.fill,
        "device": args.device,
        "lab_batch": "sample + contiguous observations and next_observations",
        "machine": machine,
    }
    result["sampling_speedup"] = result["sample_batches_per_s"] / result["sb3_sample_batches_per_s"]
    result["memory_ratio"] = result["sb3_bytes_per_transition"] / result["bytes_per_transition"]
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
