"""Steps per second of the Atari 100k presets on Breakout, where each step's time goes, and
Stable-Baselines3's DQN at the same replay ratio.

The Atari 100k regime does one gradient step of 32 transitions per agent step (`--train-freq
1`), four times DQN's usual ratio, so the update bounds the speed. Sides, alternating, each
stepped as the runner steps it (`train_step`, then the finished episodes), in steady state
(random play up to `--learning-starts`, `--warmup-steps` untimed learning steps, then
`--steps` timed):
  - `der`: `lab train rainbow --preset atari100k` (Data-Efficient Rainbow: dueling, Double,
    C51, noisy nets, PER, 20-step returns);
  - `drq`: `lab train dqn --preset atari100k-drq` (DrQ(epsilon): dueling, Double, 10-step
    returns, random shifts of both observation batches), at a fixed epsilon;
  - `dqn`: the lab's plain DQN (RL Zoo's Atari settings) at one update per step;
  - `der-per-stream`, `drq-per-stream`: the same presets with a 512-unit hidden layer per
    dueling stream (Wang et al.) instead of Dopamine's shared one, to measure what the
    shared layout saves, alternating with the sides above;
  - `drq-target-pass`: DrQ(epsilon) with the target network's own pass over the next
    observations, as before the update read it from the online pass (the target is copied
    after every update, so the numbers are the same), to measure the pass saved;
  - `sb3`: SB3's DQN ("CnnPolicy", `make_atari_env` + `VecFrameStack(4)`) with those same
    settings: the peer doing `dqn`'s work (SB3 has no Rainbow, DER or DrQ).
`dqn`, `drq` and `sb3` act epsilon-greedily at the same fixed `--epsilon` (an acting pass on
nearly every step), `der` explores with its noise (an acting pass on every step). The lab
sides compile as a 100k-step run decides (`--compile auto`: the update, compile time in the
untimed warm-up).

For the lab sides the window is split, in milliseconds per agent step: `acting` (the
acting pass), `update` (the gradient step without sampling: noise, shifts, forward,
backward, clipping, Adam, priorities, target update), `sample` (replay sampling) and
`env_and_loop` (the rest: stepping ALE, storing the transition, the loop). `update` is
split once more on the last round, untimed, with the PyTorch profiler's CPU totals per op
family (`update_ops`). Prints one JSON object.

`--load N` runs N busy processes beside all sides, as on a machine that is rarely idle.

    python bench/atari100k_sps.py --json [--repeats 3] [--sides der,drq,dqn,sb3] [--load N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's threads must not spin while ALE works

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
from atari_sps import ENV_ID, SHARED, PassCounter, sync

from lab.api import Tracker
from lab.plugins.dqn import ATARI_DQN, DQN, DQNConfig, DQNSettings
from lab.plugins.rainbow import RAINBOW_PRESETS, Rainbow, RainbowConfig
from lab.run.context import RunContext
from lab.run.discovery import load_lab

BUDGET = 100_000  # the regime's budget: what --compile auto decides on
PROTOCOL_ONLY = ("steps", "sticky_actions", "eval_sticky_actions", "eval_episodes", "eval_interval",
                 "checkpoint_interval")


def dqn_settings(args: argparse.Namespace) -> dict[str, Any]:
    """RL Zoo's Atari DQN at one gradient step per agent step, a fixed epsilon."""
    defaults = DQNSettings()
    params = {name: ATARI_DQN.get(name, getattr(defaults, name)) for name in SHARED}
    params.update(train_freq=1, gradient_steps=1, buffer_size=BUDGET, learning_starts=args.learning_starts,
                  exploration_initial_eps=args.epsilon, exploration_final_eps=args.epsilon)
    return params


def preset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    values = {k: v for k, v in RAINBOW_PRESETS[name].items() if k not in PROTOCOL_ONLY}
    values["learning_starts"] = args.learning_starts
    if not values.get("noisy"):
        values.update(exploration_initial_eps=args.epsilon, exploration_final_eps=args.epsilon)
    return values


class DrQTargetPass(DQN):
    """DQN that always runs its target network's pass, even where the online one gives it."""

    def __init__(self, config: DQNConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.target_is_online = False


AGENTS: dict[str, Callable[[argparse.Namespace], tuple[type, Any]]] = {
    "der": lambda a: (Rainbow, RainbowConfig(**preset("atari100k", a))),
    "drq": lambda a: (DQN, DQNConfig(**preset("atari100k-drq", a))),
    "dqn": lambda a: (DQN, DQNConfig(**dqn_settings(a))),
    # the presets on the network they had before (a 512-unit hidden layer per dueling stream)
    "der-per-stream": lambda a: (Rainbow, RainbowConfig(**{**preset("atari100k", a), "dueling_hidden": "per-stream"})),
    "drq-per-stream": lambda a: (DQN, DQNConfig(**{**preset("atari100k-drq", a), "dueling_hidden": "per-stream"})),
    "drq-target-pass": lambda a: (DrQTargetPass, DQNConfig(**preset("atari100k-drq", a))),
}


class StepClock:
    """Seconds spent in the acting pass, the gradient step and replay sampling (inside it)."""

    def __init__(self, agent: DQN) -> None:
        self.seconds = {"acting": 0.0, "update": 0.0, "sample": 0.0}
        self.acting = self.learning = 0
        agent.greedy = self._timed(agent.greedy, "acting")
        agent.gradient_step = self._timed(agent.gradient_step, "update")
        agent.buffer.sample = self._timed(agent.buffer.sample, "sample")

    def _timed(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if part == "acting":
                self.acting += 1
            elif part == "update":
                self.learning += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.seconds[part] += elapsed
                if part == "sample":  # sampling runs inside the gradient step
                    self.seconds["update"] -= elapsed
        return timed


def update_ops(agent: DQN, steps: int) -> dict[str, float]:
    """ms per gradient step by op family (PyTorch profiler, self CPU time), untimed."""
    from torch.profiler import ProfilerActivity, profile

    families = {"conv": ("conv", "convolution"), "matmul": ("addmm", "mm", "linear", "matmul", "bmm"),
                "adam": ("adam",), "clip_norm": ("foreach_norm", "norm", "foreach_mul"),
                "noise": ("randn", "sign", "sqrt", "outer")}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            agent.gradient_step()
    totals: dict[str, float] = {family: 0.0 for family in (*families, "other")}
    for event in prof.key_averages():
        name = event.key.lower()
        family = next((f for f, keys in families.items() if any(k in name for k in keys)), "other")
        totals[family] += event.self_cpu_time_total / 1e3 / steps
    return {k: round(v, 2) for k, v in totals.items()}


def lab_side(name: str, args: argparse.Namespace, device: torch.device, profile_ops: bool) -> dict[str, Any]:
    algo_cls, config = AGENTS[name](args)
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = RunContext(device=device, seed=0, total_steps=BUDGET, run_dir=Path(run_dir),
                      registry=load_lab().registry, tracker=Tracker(), env_id=ENV_ID, compile_setting=args.compile)
        agent = algo_cls(config, ctx)
        threads = torch.get_num_threads()
        cores = threads_as_the_runner_sets_them(agent, str(device))
        try:
            def run_to(target: int) -> None:
                while agent.global_step < target:  # as the runner steps it
                    if cores is not None:
                        cores.adjust()
                    agent.train_step()
                    ctx.pop_episodes()

            run_to(args.learning_starts + args.warmup_steps)
            clock = StepClock(agent)
            sync(device)
            start_step, start = agent.global_step, time.perf_counter()
            run_to(start_step + args.steps)
            sync(device)
            seconds = time.perf_counter() - start
            steps = agent.global_step - start_step
            if clock.acting == 0 or clock.learning == 0:
                raise AssertionError(f"{name}: no acting pass or no gradient step in the timed window")
            ms = {part: 1e3 * s / steps for part, s in clock.seconds.items()}
            ms["env_and_loop"] = 1e3 * seconds / steps - sum(ms.values())
            result: dict[str, Any] = {
                "sps": steps / seconds, "acting_passes_per_step": clock.acting / steps,
                "gradient_steps_per_step": clock.learning / steps,
                "compiled_update": float(bool(agent.compiled_td_loss.compiled)),
                **{f"ms_{part}": v for part, v in ms.items()}}
            if profile_ops and device.type == "cpu":
                result["update_ops"] = update_ops(agent, 50)
            return result
        finally:
            agent.close()
            torch.set_num_threads(threads)  # SB3's side keeps torch's default, as its users get it


def sb3_side(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(ENV_ID, n_envs=1, seed=0), n_stack=4)
    try:
        model = SB3DQN("CnnPolicy", env, device=device, seed=0, verbose=0, **dqn_settings(args))
        model.learn(total_timesteps=args.learning_starts + args.warmup_steps)
        passes = PassCounter(model.q_net)
        sync(device)
        start_step, start = model.num_timesteps, time.perf_counter()
        model.learn(total_timesteps=args.steps, reset_num_timesteps=False)
        sync(device)
        seconds = time.perf_counter() - start
        passes.remove()
        steps = model.num_timesteps - start_step
        return {"sps": steps / seconds, "acting_passes_per_step": passes.acting / steps,
                "gradient_steps_per_step": passes.learning / steps}
    finally:
        env.close()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    numbers = [k for k, v in runs[0].items() if isinstance(v, float)]
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in numbers}
    out["sps_runs"] = [round(r["sps"], 1) for r in runs]
    out["sps_median"] = round(out.pop("sps"), 1)
    if "update_ops" in runs[-1]:
        out["update_ops_ms"] = runs[-1]["update_ops"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print compact JSON")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sides", default="der,drq,dqn,sb3",
                        help="comma-separated: der, drq, dqn, sb3, der-per-stream, drq-per-stream, drq-target-pass")
    parser.add_argument("--epsilon", type=float, default=0.01, help="fixed epsilon of the epsilon-greedy sides")
    parser.add_argument("--learning-starts", type=int, default=1_600, help="random steps first (the presets': 1,600)")
    parser.add_argument("--warmup-steps", type=int, default=300, help="untimed learning steps")
    parser.add_argument("--steps", type=int, default=600, help="timed learning steps")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    add_load_option(parser)
    args = parser.parse_args(argv)
    sides = args.sides.split(",")
    unknown = sorted(set(sides) - {*AGENTS, "sb3"})
    if unknown:
        parser.error(f"unknown side(s) {', '.join(unknown)}; choose from {', '.join([*AGENTS, 'sb3'])}")
    if not 0.0 <= args.epsilon < 1.0 or args.repeats < 1 or args.steps < 1:
        parser.error("--epsilon in [0, 1), --repeats and --steps positive")
    device = torch.device(args.device)
    machine = describe(device)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    with busy_processes(args.load):
        for round_ in range(args.repeats):
            for side in sides:
                last = round_ == args.repeats - 1
                runs[side].append(sb3_side(args, device) if side == "sb3" else lab_side(side, args, device, last))
                gc.collect()
    by_side = {side: summarise(r) for side, r in runs.items()}
    result: dict[str, Any] = {"bench": "atari100k_sps", "env": ENV_ID, "machine": machine,
                              "learning_starts": args.learning_starts, "warmup_steps": args.warmup_steps,
                              "timed_steps": args.steps, "repeats": args.repeats, "epsilon": args.epsilon,
                              "compile": args.compile, "load": args.load, "dqn_settings": dqn_settings(args),
                              "by_side": by_side}
    if "dqn" in by_side and "sb3" in by_side:
        result["dqn_vs_sb3"] = round(by_side["dqn"]["sps_median"] / by_side["sb3"]["sps_median"], 2)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
