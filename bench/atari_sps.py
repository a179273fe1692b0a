"""Steps per second of the lab's DQN against Stable-Baselines3's DQN on Breakout.

Both sides do the same work in the timed window:
  - the same fixed epsilon (`--epsilon`, initial = final, so no schedule horizon matters):
    an acting forward pass on nearly every step, as in most of a real run;
  - RL Zoo's Atari DQN (the lab's `ATARI_DQN` preset: one gradient step of 32 transitions
    every 4 agent steps, target copy every 1000) apart from `--learning-starts` and
    `--buffer-size`;
  - steady state only: random play fills the buffer up to `--learning-starts`, then
    `--warmup-steps` learning steps run untimed, then `--steps` learning steps are timed.
The peer is SB3 as a user runs it: `make_atari_env` (AtariWrapper) + `VecFrameStack(4)` +
`DQN("CnnPolicy")`; the lab runs `train_step` as its runner does. The window counts acting
passes and gradient steps on both sides (SB3: a forward hook on its online Q-network, grad
off or on; the lab: calls of its acting pass and gradient step, which a compiled network
would hide from a hook), so the JSON shows both sides acted and learned alike.

`--num-envs 1,2,4,8` reports the lab's SPS over env counts; `--sb3-num-envs 1,8` runs SB3 at
those counts too, with its `train_freq` (counted in vector steps) and `gradient_steps` set so
that the replay ratio stays one batch per 4 agent steps. Sides alternate (lab, sb3, lab,
sb3, ...) for `--repeats` rounds; medians and the ratio of medians are reported. The lab's
side sets its threads as a run does (adjusted to what other processes leave free); `--load
N` runs N busy processes beside both sides, as on a machine that is rarely idle. Prints one
JSON object.

    python bench/atari_sps.py --algo dqn --json [--num-envs 1,2,4,8] [--sb3-num-envs 1,8] [--repeats 3]
                              [--compile auto|true|false] [--load N]

The lab side runs with `--compile` as a 10M-step run would (`auto` compiles the Nature-CNN
update; compile time falls in the untimed warm-up); `network_fraction` is the share of the
lab's window spent in its network's arithmetic (acting passes and gradient steps), the
bound on this machine.
"""

from __future__ import annotations

import os

# Both peers: torch's OpenMP threads must not spin while the emulator threads work.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _machine import add_load_option, busy_processes, describe, threads_as_the_runner_sets_them
from torch import nn

from lab.api import Tracker
from lab.buffers import ReplayBuffer
from lab.plugins.dqn import ATARI_DQN, DQN, DQNConfig, DQNSettings
from lab.run.context import RunContext
from lab.run.discovery import load_lab

ENV_ID = "BreakoutNoFrameskip-v4"
# The hyperparameters SB3's DQN shares with the lab's (same names, same defaults).
SHARED = ("learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma", "train_freq",
          "gradient_steps", "target_update_interval", "exploration_fraction", "exploration_initial_eps",
          "exploration_final_eps", "max_grad_norm")


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """RL Zoo's Atari DQN over SB3's defaults, with the bench's fill, buffer and fixed epsilon."""
    defaults = DQNSettings()
    params = {name: ATARI_DQN.get(name, getattr(defaults, name)) for name in SHARED}
    params.update(buffer_size=args.buffer_size, learning_starts=args.learning_starts,
                  exploration_initial_eps=args.epsilon, exploration_final_eps=args.epsilon)
    return params


class PassCounter:
    """Counts forward passes of an online Q-network: acting (grad off) and learning (grad on)."""

    def __init__(self, q_net: nn.Module) -> None:
        self.acting = self.learning = 0
        self.handle = q_net.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self.learning += 1
        else:
            self.acting += 1

    def remove(self) -> None:
        self.handle.remove()


class NetworkClock:
    """The lab's acting passes and gradient steps: how many, and the seconds spent in the
    network's arithmetic (acting passes and gradient steps: forward, backward, optimizer;
    replay sampling excluded). On a CPU every op is synchronous, so wall time around the
    calls is their cost."""

    def __init__(self, agent: DQN) -> None:
        self.seconds = 0.0
        self.acting = self.learning = 0
        agent.greedy = self._timed(agent.greedy, +1, "acting")
        agent.gradient_step = self._timed(agent.gradient_step, +1, "learning")
        agent.buffer.sample = self._timed(agent.buffer.sample, -1, None)  # inside gradient_step

    def _timed(self, fn: Callable[..., Any], sign: int, count: str | None) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if count is not None:
                setattr(self, count, getattr(self, count) + 1)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += sign * (time.perf_counter() - start)
        return timed


def window(steps: int, vector_steps: int, seconds: float, passes: PassCounter | NetworkClock) -> dict[str, float]:
    """A timed window's figures; refuses a window without acting passes (it would flatter a side)."""
    if passes.acting == 0:
        raise AssertionError("no acting forward pass in the timed window: epsilon must be < 1 after learning starts")
    return {"sps": steps / seconds, "acting_passes_per_vector_step": passes.acting / vector_steps,
            "gradient_steps_per_agent_step": passes.learning / steps}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lab_dqn(args: argparse.Namespace, device: torch.device, num_envs: int) -> dict[str, float]:
    """The lab's DQN stepped as its runner steps it (train_step, then the finished episodes)."""
    params = hyperparameters(args)
    untimed = args.learning_starts + args.warmup_steps
    with tempfile.TemporaryDirectory() as run_dir:
        # the budget of the run whose steady state this samples (RL Zoo's 10M): `--compile auto`
        # decides as it would there; the fixed epsilon makes the horizon matter nowhere else
        ctx = RunContext(device=device, seed=0, total_steps=ATARI_DQN["steps"], run_dir=Path(run_dir),
                      registry=load_lab().registry, tracker=Tracker(), env_id=ENV_ID,
                      compile_setting=args.compile)
        agent = DQN(DQNConfig(**params, num_envs=num_envs), ctx)
        threads = torch.get_num_threads()
        cores = threads_as_the_runner_sets_them(agent, str(device))
        try:
            def run_to(target: int) -> None:
                while agent.global_step < target:  # as the runner steps it
                    if cores is not None:
                        cores.adjust()
                    agent.train_step()
                    ctx.pop_episodes()

            run_to(untimed)
            if agent.epsilon() != args.epsilon:
                raise AssertionError(f"lab epsilon {agent.epsilon()} after learning starts, expected {args.epsilon}")
            clock = NetworkClock(agent)
            sync(device)
            start_step, start = agent.global_step, time.perf_counter()
            run_to(start_step + args.steps)
            sync(device)
            seconds = time.perf_counter() - start
            steps = agent.global_step - start_step
            result = window(steps, steps // num_envs, seconds, clock)
            if device.type == "cpu":  # (a GPU's asynchronous ops would need a sync per call)
                result["network_fraction"] = clock.seconds / seconds
            result["compiled_update"] = float(bool(agent.compiled_td_loss.compiled))
            return result
        finally:
            agent.close()
            torch.set_num_threads(threads)  # SB3's side keeps torch's default, as its users get it


def sb3_dqn(args: argparse.Namespace, device: torch.device, num_envs: int) -> dict[str, float]:
    """SB3's DQN as a user runs it: `learn`, here in two calls (untimed, then the window)."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(ENV_ID, n_envs=num_envs, seed=0), n_stack=4)
    params = hyperparameters(args)
    # SB3 counts train_freq in vector steps: keep one gradient step per 4 agent steps
    params.update(train_freq=max(1, 4 // num_envs), gradient_steps=max(1, num_envs // 4))
    try:
        model = DQN("CnnPolicy", env, device=device, seed=0, verbose=0, optimize_memory_usage=False, **params)
        model.learn(total_timesteps=args.learning_starts + args.warmup_steps)
        if model.exploration_rate != args.epsilon:
            raise AssertionError(f"SB3 epsilon {model.exploration_rate} after learning starts, expected {args.epsilon}")
        passes = PassCounter(model.q_net)
        sync(device)
        start_step, start = model.num_timesteps, time.perf_counter()
        model.learn(total_timesteps=args.steps, reset_num_timesteps=False)
        sync(device)
        seconds = time.perf_counter() - start
        passes.remove()
        steps = model.num_timesteps - start_step
        return window(steps, steps // num_envs, seconds, passes)
    finally:
        env.close()


def buffer_bytes(transitions: int) -> dict[str, Any]:
    """Device bytes of a 1M-transition Atari replay buffer: the lab's (allocated on the meta
    device, so nothing is really allocated) and SB3's (its numpy layout, computed)."""
    lab = ReplayBuffer(transitions, (4, 84, 84), 1, "meta", frame_stack=4, generator=torch.Generator())
    frame_stack_obs = 4 * 84 * 84
    sb3 = transitions * (2 * frame_stack_obs + 8 + 4 + 4 + 4)  # obs, next_obs, action, reward, done, timeout
    sb3_optimized = transitions * (frame_stack_obs + 8 + 4 + 4 + 4)
    return {"transitions": transitions, "lab_gb": lab.storage_bytes / 1e9, "sb3_gb": sb3 / 1e9,
            "sb3_optimize_memory_gb": sb3_optimized / 1e9, "lab_fits_7_2_gb": lab.storage_bytes <= 7.2e9}


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    median = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
    return {"sps_median": round(median.pop("sps"), 1), "sps_runs": [round(r["sps"], 1) for r in runs], **median}


def counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="dqn", choices=["dqn"], help="the algorithm compared (only DQN so far)")
    parser.add_argument("--json", action="store_true", help="print compact JSON")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epsilon", type=float, default=0.01, help="fixed exploration epsilon once learning starts")
    parser.add_argument("--learning-starts", type=int, default=5_000, help="agent steps of random play filling the buffer")
    parser.add_argument("--warmup-steps", type=int, default=1_000, help="untimed learning steps before the window")
    parser.add_argument("--steps", type=int, default=2_000, help="timed learning steps (agent steps, all envs)")
    parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity (RL Zoo: 100k)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--num-envs", default="1", help="comma-separated env counts for the lab")
    parser.add_argument("--sb3-num-envs", default="1", help="comma-separated env counts for SB3 (divisors or multiples of 4)")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"],
                        help="the lab's --compile (auto: as a 10M-step Breakout run decides)")
    parser.add_argument("--compare-eager", action="store_true",
                        help="at 1 env, also run the lab with --compile false (alternating): compile_gain")
    add_load_option(parser)
    args = parser.parse_args(argv)
    if not 0.0 <= args.epsilon < 1.0:
        parser.error("--epsilon must be in [0, 1): at 1 no acting forward pass runs")
    if args.repeats < 1 or args.steps < 1 or args.warmup_steps < 0 or args.learning_starts < 0:
        parser.error("--repeats and --steps must be positive, --warmup-steps and --learning-starts >= 0")
    device = torch.device(args.device)
    sb3_counts = [] if args.skip_sb3 else counts(args.sb3_num_envs)
    if any(4 % n and n % 4 for n in sb3_counts):
        parser.error("--sb3-num-envs: SB3 keeps one batch per 4 agent steps only for divisors or multiples of 4")
    lab_counts = sorted(set(counts(args.num_envs)) | set(sb3_counts))  # the lab at every count SB3 runs at
    machine = describe(device)  # before the runs: the load average says whether the machine was idle

    eager = argparse.Namespace(**{**vars(args), "compile": "false"})
    sides: dict[str, Callable[[argparse.Namespace, torch.device, int], dict[str, float]]] = {
        "lab": lab_dqn, "sb3": sb3_dqn, "lab_eager": lambda _, d, n: lab_dqn(eager, d, n)}
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with busy_processes(args.load):
        for _ in range(args.repeats):
            for n in lab_counts:
                order = ["lab", "sb3"] if n in sb3_counts else ["lab"]
                if args.compare_eager and n == 1:
                    order.append("lab_eager")
                for side in order:
                    runs.setdefault((side, n), []).append(sides[side](args, device, n))
                    gc.collect()

    by_num_envs: dict[str, dict[str, Any]] = {}
    for n in lab_counts:
        row = {"lab": summarise(runs[("lab", n)])}
        if n in sb3_counts:
            row["sb3"] = summarise(runs[("sb3", n)])
            row["speedup"] = round(row["lab"]["sps_median"] / row["sb3"]["sps_median"], 2)
        if ("lab_eager", n) in runs:
            row["lab_eager"] = summarise(runs[("lab_eager", n)])
            row["compile_gain"] = round(row["lab"]["sps_median"] / row["lab_eager"]["sps_median"], 2)
        by_num_envs[str(n)] = row
    result: dict[str, Any] = {
        "bench": "atari_sps", "env": ENV_ID, "machine": machine, "hyperparameters": hyperparameters(args),
        "epsilon": args.epsilon, "learning_starts": args.learning_starts, "warmup_steps": args.warmup_steps,
        "timed_steps": args.steps, "repeats": args.repeats, "compile": args.compile, "load": args.load,
        "by_num_envs": by_num_envs,
    }
    if "1" in by_num_envs and "speedup" in by_num_envs["1"]:
        one = by_num_envs["1"]
        result.update(lab_sps=one["lab"]["sps_median"], sb3_sps=one["sb3"]["sps_median"], speedup=one["speedup"])
    result["replay_buffer_1m"] = buffer_bytes(1_000_000)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
