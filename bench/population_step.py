"""What stacking N members buys one gradient step, by network size: the measured reason why
populations pay for small policy-gradient MLPs on a CPU and not (yet) for the Atari DQN or
SAC-sized updates (issue 34: "sac/td3 if it pays on some device, with the measured reason
where it does not"; DQN Breakout's "measured bound with the profile that shows it").

Each case times one gradient step of N members two ways, on the same weights and data:
`separate`, N modules one after another (what N runs in one process would do), and
`stacked`, the lab's `StackedPolicy` (member-first weights, `baddbmm`, grouped convolutions)
with one backward for all. A step is a forward with gradients on `batch` observations, a
second forward without them on `batch` more (a target or next-observation pass), the
backward, and the Adam update. Sides alternate; medians of `--repeats` rounds of
`--iterations` steps; per-member milliseconds and the ratio.

Cases (the networks are the lab's `ActorCritic`; each stands for an update of that size):
  ppo-cartpole  64x64 tanh MLPs, batch 256 (CartPole's preset minibatch)
  sac-mujoco    256x256 ReLU MLPs on 17 inputs, batch 256 (SAC/TD3's twin critics on HalfCheetah)
  dqn-atari     the Nature CNN on 4x84x84 frames, batch 32 (DQN, DrQ(eps) on Breakout)

    python bench/population_step.py --json [--members 4,8] [--threads 2] [--load 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import add_load_option, busy_processes, describe

from lab.rl.policies import ActorCritic
from lab.rl.population import StackedPolicy

CASES: dict[str, dict[str, Any]] = {
    "ppo-cartpole": {"obs": gym.spaces.Box(-1, 1, (4,)), "actions": gym.spaces.Discrete(2), "net_arch": (64, 64),
                     "activation": nn.Tanh, "batch": 256},
    "sac-mujoco": {"obs": gym.spaces.Box(-1, 1, (17,)), "actions": gym.spaces.Box(-1, 1, (6,)),
                   "net_arch": (256, 256), "activation": nn.ReLU, "batch": 256},
    "dqn-atari": {"obs": gym.spaces.Box(0, 255, (4, 84, 84), dtype="uint8"), "actions": gym.spaces.Discrete(4),
                  "net_arch": (64, 64), "activation": nn.ReLU, "batch": 32},
}


def observations(spec: dict[str, Any], members: int) -> torch.Tensor:
    shape = (members, spec["batch"], *spec["obs"].shape)
    if spec["obs"].dtype == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8)
    return torch.randn(shape)


def step_of(loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], params: list[torch.Tensor],
            optimizer: torch.optim.Optimizer) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def step(obs: torch.Tensor, next_obs: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of(obs, next_obs).backward()
        optimizer.step()
    return step


def loss(out: torch.Tensor, values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.square().mean() + (values - target).square().mean()


def case_sides(spec: dict[str, Any], members: int) -> dict[str, Callable[[], None]]:
    nets = [ActorCritic(spec["obs"], spec["actions"], spec["net_arch"], activation=spec["activation"])
            for _ in range(members)]
    obs, next_obs = observations(spec, members), observations(spec, members)

    separate_steps = []
    for k, net in enumerate(nets):
        def member_loss(o: torch.Tensor, n: torch.Tensor, net: ActorCritic = net) -> torch.Tensor:
            with torch.no_grad():
                _, target = net(n)
            return loss(*net(o), target)
        separate_steps.append((step_of(member_loss, list(net.parameters()),
                                       torch.optim.Adam(net.parameters(), lr=1e-4, foreach=True)), k))

    names = [name for name, _ in nets[0].named_parameters()]
    params = {n: torch.stack([net.get_parameter(n).detach() for net in nets]).requires_grad_() for n in names}
    stacked = StackedPolicy(nets[0], params)

    def stacked_loss(o: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            _, target = stacked(n)
        out, values = stacked(o)
        return members * loss(out, values, target)  # (each member's own mean, summed)

    stacked_step = step_of(stacked_loss, list(params.values()),
                           torch.optim.Adam(list(params.values()), lr=1e-4, foreach=True))

    def separate() -> None:
        for step, k in separate_steps:
            step(obs[k], next_obs[k])

    return {"separate": separate, "stacked": lambda: stacked_step(obs, next_obs)}


def timed(work: Callable[[], None], iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        work()
    return (time.perf_counter() - start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--members", default="4,8")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    add_load_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    with busy_processes(args.load):
        for case in args.cases.split(","):
            for members in map(int, args.members.split(",")):
                sides = case_sides(CASES[case], members)
                for work in sides.values():  # warm-up: allocation, oneDNN's primitive choice
                    timed(work, 2)
                times: dict[str, list[float]] = {side: [] for side in sides}
                for round_ in range(args.repeats):
                    for side in (sides if round_ % 2 == 0 else reversed(list(sides))):
                        times[side].append(timed(sides[side], args.iterations))
                per_member = {side: round(statistics.median(t) / members * 1e3, 3) for side, t in times.items()}
                results[f"{case} x{members}"] = {
                    "ms_per_member_step": per_member,
                    "speedup": round(per_member["separate"] / per_member["stacked"], 2),
                }
                print(f"{case} x{members}: {per_member}", file=sys.stderr, flush=True)
    report = {"machine": describe("cpu"), "threads": args.threads, "load": args.load, "cases": results}
    print(json.dumps(report, indent=2) if args.json else report)


if __name__ == "__main__":
    main()
