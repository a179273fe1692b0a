"""Steps per second of the lab's SAC against Stable-Baselines3's SAC, identical settings.

HalfCheetah-v5, 1 env, batch 256, two 256-unit layers (actor and each critic), one gradient
step per env step, learning after 1,000 steps, automatic entropy tuning, Adam 3e-4, tau
0.005: SB3's defaults on both sides (`--algo td3` compares TD3 the same way: 400x300, policy
delay 2, exploration noise 0.1). Each side runs in its own fresh process with its library's
defaults, as its users get them (SB3: torch's default threads; the lab as `lab train` runs
it: every core other processes leave free for the continuous agents' updates, OpenMP's
passive waiting). Each side first plays the
1,000 random steps and `--warmup` learning steps untimed (start-up, replay filling,
allocator warm-up), then times `--steps` learning steps. Sides alternate for `--repeats`
rounds; the medians and their ratio are reported, with what bounds the lab's side: the share
of its steady-state time spent in gradient steps, the share of a gradient step inside matrix
products (profiled after timing) and the steps/s left if nothing but those products cost.
`--load N` runs N busy processes (a tight Python loop each) beside both sides, as on a
machine that is rarely idle. `--env-backend envpool` steps the lab's side in EnvPool's C++
env (SB3 stays on gymnasium's, as its users run it).

    python bench/offpolicy_sps.py --json [--algo sac|td3] [--steps 1500] [--repeats 3] [--load 1]
                                         [--env-backend gymnasium|envpool]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENV = "HalfCheetah-v5"
LEARNING_STARTS = 1_000
SETTINGS: dict[str, dict[str, Any]] = {
    "sac": dict(learning_rate=3e-4, buffer_size=100_000, learning_starts=LEARNING_STARTS, batch_size=256,
                tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, net_arch=(256, 256)),
    "td3": dict(learning_rate=1e-3, buffer_size=100_000, learning_starts=LEARNING_STARTS, batch_size=256,
                tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, net_arch=(400, 300), policy_delay=2,
                action_noise=0.1),
}


def lab_sps(algo: str, warmup: int, steps: int, device: str, seed: int,
            backend: str = "gymnasium") -> dict[str, float]:
    import torch
    from _machine import threads_as_the_runner_sets_them

    from lab.api import Tracker
    from lab.run.context import RunContext
    from lab.run.discovery import load_lab

    registry = load_lab().registry
    cls = registry.algorithm(algo)
    ctx = RunContext(device=torch.device(device), seed=seed, total_steps=10**7, run_dir=Path(tempfile.mkdtemp()),
                  registry=registry, tracker=Tracker(), env_id=ENV, env_options={"env_backend": backend})
    agent = cls(cls.Config(**SETTINGS[algo]), ctx)
    cores = threads_as_the_runner_sets_them(agent, device)

    def train_step() -> None:  # as the runner steps it
        if cores is not None:
            cores.adjust()
        agent.train_step()
        ctx.pop_episodes()

    update_time = 0.0
    original = agent.gradient_step

    def timed_update() -> dict[str, Any]:
        nonlocal update_time
        start = time.perf_counter()
        out = original()
        update_time += time.perf_counter() - start
        return out

    agent.gradient_step = timed_update  # type: ignore[method-assign]
    try:
        while agent.global_step < LEARNING_STARTS + warmup:
            train_step()
        update_time, start, before = 0.0, time.perf_counter(), agent.global_step
        while agent.global_step < before + steps:
            train_step()
        elapsed = time.perf_counter() - start
        timed = agent.global_step - before
        return {"sps": timed / elapsed, "update_share": update_time / elapsed,
                **matmul_bound(agent, elapsed / timed, update_time / timed)}
    finally:
        agent.close()
        ctx.close_envs()


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_bound(agent: Any, step_s: float, update_s: float, updates: int = 100) -> dict[str, float]:
    """What bounds the step: the share of a gradient step spent inside matrix products (the
    kernels both libraries call with the same shapes) and the steps/s left if everything else
    in the update cost nothing. Profiled after the timed part, so the timing is untouched."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(updates):
            agent.gradient_step()
    events = [e for e in prof.key_averages() if e.key in MATMULS]
    matmul_s = sum(e.self_cpu_time_total for e in events) / 1e6 / updates
    flops = sum(e.flops for e in events) / updates
    profiled_update_s = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6 / updates
    share = matmul_s / profiled_update_s
    return {"update_ms": 1e3 * update_s, "matmul_share_of_update": share, "gflop_per_update": flops / 1e9,
            "matmul_gflops": flops / 1e9 / matmul_s,
            "sps_if_only_matmuls_cost": 1.0 / (step_s - update_s + share * update_s)}


def sb3_sps(algo: str, warmup: int, steps: int, device: str, seed: int) -> dict[str, float]:
    import numpy as np
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    s = dict(SETTINGS[algo])
    kwargs: dict[str, Any] = dict(policy_kwargs=dict(net_arch=list(s.pop("net_arch"))))
    venv = make_vec_env(ENV, n_envs=1, seed=seed)
    if algo == "td3":
        dims = venv.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dims), s.pop("action_noise") * np.ones(dims))
    model = (SAC if algo == "sac" else TD3)("MlpPolicy", venv, device=device, seed=seed, verbose=0, **s, **kwargs)
    model.learn(LEARNING_STARTS + warmup)  # start-up
    start, before = time.perf_counter(), model.num_timesteps
    model.learn(steps, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    venv.close()
    return {"sps": (model.num_timesteps - before) / elapsed}


def measure(side: str, algo: str, warmup: int, steps: int, device: str, seed: int, backend: str) -> dict[str, float]:
    """One side's run in a fresh process whose environment is that library's default."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    result = subprocess.run(
        [sys.executable, __file__, "--worker", side, "--algo", algo, "--warmup", str(warmup), "--steps", str(steps),
         "--device", device, "--seed", str(seed), "--env-backend", backend],
        capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from _machine import add_load_option

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=tuple(SETTINGS), default="sac")
    parser.add_argument("--warmup", type=int, default=200, help="learning steps before timing")
    parser.add_argument("--steps", type=int, default=1500, help="timed learning steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    add_load_option(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--env-backend", choices=("gymnasium", "envpool"), default="gymnasium",
                        help="who simulates the lab's env (SB3 always steps gymnasium's)")
    parser.add_argument("--worker", choices=("lab", "sb3"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = lab_sps if args.worker == "lab" else sb3_sps
        backend = {"backend": args.env_backend} if args.worker == "lab" else {}  # SB3 steps gymnasium's env
        print(json.dumps(run(args.algo, args.warmup, args.steps, args.device, args.seed, **backend)))
        return
    from _machine import busy_processes, describe

    with busy_processes(args.load):
        machine = describe(args.device)
        runs: dict[str, list[dict[str, float]]] = {"lab": [], "sb3": []}
        for _ in range(args.repeats):  # alternate sides
            for side in ("lab", "sb3"):
                runs[side].append(measure(side, args.algo, args.warmup, args.steps, args.device, args.seed,
                                          args.env_backend))
            print(f"{args.algo}: lab {runs['lab'][-1]['sps']:.1f} sb3 {runs['sb3'][-1]['sps']:.1f}", file=sys.stderr)
    medians = {side: statistics.median(r["sps"] for r in runs[side]) for side in runs}
    print(json.dumps({
        "bench": "offpolicy_sps", "machine": machine, "algo": args.algo, "env": ENV, "load": args.load,
        "lab_env_backend": args.env_backend,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS[args.algo].items()},
        "timed_steps": args.steps,
        "lab": {"sps_median": round(medians["lab"], 1), "sps_runs": [round(r["sps"], 1) for r in runs["lab"]],
                **{key: round(statistics.median(r[key] for r in runs["lab"]), 3)
                   for key in ("update_share", "update_ms", "matmul_share_of_update", "gflop_per_update",
                               "matmul_gflops", "sps_if_only_matmuls_cost")}},
        "sb3": {"sps_median": round(medians["sb3"], 1), "sps_runs": [round(r["sps"], 1) for r in runs["sb3"]]},
        "speedup": round(medians["lab"] / medians["sb3"], 2),
    }, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
