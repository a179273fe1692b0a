"""Env steps per second of ale-py's vector env (the lab's Atari back end) against EnvPool's Atari.

Both are threaded C++ emulator pools (ale-py's is derived from EnvPool's), asked for the same
work: Breakout, the DeepMind preprocessing (frame skip 4 with max-pool, 84x84 grey, up to 30
no-op starts, fire on reset), single frames (the lab stacks frames itself), raw rewards, no
life-loss terminal, sticky actions 0.25, `--envs` envs stepped synchronously on as many threads
as cores, uniformly random actions (the same per side). Each side runs in its own fresh
process, plays `--warmup` steps untimed, then `--steps` timed batch steps; sides alternate for
`--repeats` rounds and the medians are reported. `--load N` runs N busy processes (a tight
Python loop each) beside both sides, as on a machine that is rarely idle.

    python bench/atari_env_sps.py --json [--envs 8] [--steps 2000] [--repeats 3] [--load 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GAME, ENVPOOL_ID, STICKY, NOOP_MAX, FRAME_SKIP, SIZE = "breakout", "Breakout-v5", 0.25, 30, 4, 84


def make_side(side: str, envs: int):
    """(reset, step) for one side, both with the lab's Atari settings."""
    import numpy as np

    threads = max(1, min(envs, os.cpu_count() or 1))
    if side == "ale-py":
        from ale_py.vector_env import AtariVectorEnv

        env = AtariVectorEnv(GAME, envs, num_threads=threads, repeat_action_probability=STICKY, img_height=SIZE,
                             img_width=SIZE, stack_num=1, frameskip=FRAME_SKIP, noop_max=NOOP_MAX, episodic_life=False,
                             reward_clipping=False, use_fire_reset=True)
    else:
        import envpool

        env = envpool.make(ENVPOOL_ID, env_type="gymnasium", num_envs=envs, batch_size=envs, num_threads=threads,
                           repeat_action_probability=STICKY, img_height=SIZE, img_width=SIZE, stack_num=1,
                           frame_skip=FRAME_SKIP, noop_max=NOOP_MAX, episodic_life=False, reward_clip=False,
                           use_fire_reset=True)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 4, size=(100_000, envs))
    return env, actions


def worker(side: str, envs: int, warmup: int, steps: int) -> dict[str, float]:
    env, actions = make_side(side, envs)
    env.reset(seed=0)
    for i in range(warmup):
        env.step(actions[i % len(actions)])
    start = time.perf_counter()
    for i in range(steps):
        env.step(actions[(warmup + i) % len(actions)])
    elapsed = time.perf_counter() - start
    env.close()
    return {"env_sps": steps * envs / elapsed}


def measure(side: str, args: argparse.Namespace) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--worker", side, "--envs", str(args.envs), "--warmup",
                             str(args.warmup), "--steps", str(args.steps)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from _machine import add_load_option

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200, help="untimed batch steps")
    parser.add_argument("--steps", type=int, default=2000, help="timed batch steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    add_load_option(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=("ale-py", "envpool"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.envs, args.warmup, args.steps)))
        return
    from _machine import busy_processes, describe

    with busy_processes(args.load):
        machine = describe("cpu")
        runs: dict[str, list[float]] = {"ale-py": [], "envpool": []}
        for _ in range(args.repeats):  # alternate sides
            for side in runs:
                runs[side].append(measure(side, args)["env_sps"])
            print(f"ale-py {runs['ale-py'][-1]:.0f} envpool {runs['envpool'][-1]:.0f} env steps/s", file=sys.stderr)
    medians = {side: statistics.median(values) for side, values in runs.items()}
    print(json.dumps({
        "bench": "atari_env_sps", "machine": machine, "game": GAME, "envs": args.envs, "load": args.load,
        "timed_batch_steps": args.steps,
        **{side: {"env_sps_median": round(medians[side]), "env_sps_runs": [round(v) for v in runs[side]]}
           for side in runs},
        "ale_py_over_envpool": round(medians["ale-py"] / medians["envpool"], 2),
    }, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
