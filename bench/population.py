"""Wall time of N seeds: one population (`lab train ... --seeds 1-N --vectorize`), two
populations of N/2 in two processes (`--vectorize --parallel 2`), and the same seeds as
separate runs two at a time (`--seeds 1-N --parallel 2`); for HalfCheetah also
Stable-Baselines3 running them as two processes at a time (issue 34's targets).

Cases:
  cartpole     PPO CartPole-v1 with its preset (RL Zoo's: 8 envs, n_steps 32, batch 256, 20 epochs)
  acrobot      PPO Acrobot-v1 with its preset (RL Zoo's: 16 envs, n_steps 256, normalised obs and reward)
  halfcheetah  PPO HalfCheetah-v5 with SB3's settings (8 envs, n_steps 256, batch 64, 10 epochs,
               tanh MLP 64x64, lr 3e-4 constant, no normalisation)

Every side does the same work: N runs of `--steps` each, from a fresh process (start-up
included: a user pays it), with one evaluation of five episodes at the end and no video
(SB3 as its users run it evaluates nothing; `--full-protocol` keeps the lab's own
evaluations and videos on both lab sides instead, and leaves SB3 out). Sides alternate
for `--repeats` rounds; the medians and their ratios are reported, with the peak memory
(RSS) per member. `--load N` runs N busy processes beside every side. Whether the members
learn as separate runs do: every lab run's final evaluation is kept, and the populations'
are tested against the separate runs' (two-sided Mann-Whitney U; the same seeds, budget and
settings, so a small p would mean the population changed what is learned).

    python bench/population.py --json [--cases cartpole,halfcheetah] [--seeds 8] [--steps 100000]
                               [--repeats 3] [--load 1] [--full-protocol] [--no-sb3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import add_load_option, busy_processes, describe

SB3_SETTINGS = dict(n_steps=256, batch_size=64, n_epochs=10, learning_rate=3e-4, gamma=0.99, gae_lambda=0.95,
                    clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)
CASES: dict[str, dict[str, Any]] = {
    "cartpole": {"env": "CartPole-v1", "flags": []},
    "acrobot": {"env": "Acrobot-v1", "flags": []},
    "halfcheetah": {"env": "HalfCheetah-v5", "sb3": True, "flags": [
        "--num-envs", "8", "--net-arch", "64,64", "--activation", "tanh", "--ortho-init", "true",
        "--log-std-init", "0", "--norm-obs", "false", "--norm-reward", "false", "--anneal-lr", "false",
        *[f"--{k.replace('_', '-')}={v}" for k, v in SB3_SETTINGS.items()]]},
}
SB3_SCRIPT = """
import os, sys
import torch
torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # a core each, as --parallel 2 gives each lab run
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
env_id, seed, steps, settings = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), eval(sys.argv[4])
model = PPO("MlpPolicy", make_vec_env(env_id, n_envs=8, seed=seed), seed=seed, verbose=0, **settings)
model.learn(steps)
"""


PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def measured(command: list[str]) -> list[str]:
    """`command` run by a small parent that prints the peak RSS of its largest process."""
    return [sys.executable, "-c", PEAK, *command]


def peak_mib(stderr: str) -> float:
    return int(stderr.rsplit("peak-rss-kib", 1)[1].split()[0]) / 1024


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the largest process it started) of one command."""
    start = time.perf_counter()
    done = subprocess.run(measured(command), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, peak_mib(done.stderr)


def lab_command(case: str, seeds: int, steps: int, how: list[str], full: bool, name: str) -> list[str]:
    spec = CASES[case]
    quiet = [] if full else ["--eval-interval", str(steps), "--eval-episodes", "5", "--video", "false"]
    return [sys.executable, "-m", "lab", "train", "ppo", "--env", spec["env"], *spec["flags"], "--steps", str(steps),
            *quiet, "--seeds", f"1-{seeds}", *how, "--name", name, "--trackers", "none"]


def sb3_side(case: str, seeds: int, steps: int, env: dict[str, str]) -> tuple[float, float]:
    """SB3's PPO on `seeds` seeds, two processes at a time (as `--parallel 2`), each with half
    the cores' threads (torch's default, every core in each process, oversubscribes them)."""
    start, peak, waiting = time.perf_counter(), 0.0, list(range(1, seeds + 1))
    running: list[subprocess.Popen[str]] = []
    while waiting or running:
        while waiting and len(running) < 2:
            seed = waiting.pop(0)
            command = [sys.executable, "-c", SB3_SCRIPT, CASES[case]["env"], str(seed), str(steps), repr(SB3_SETTINGS)]
            running.append(subprocess.Popen(measured(command), env=env, text=True, stderr=subprocess.PIPE))
        for proc in [p for p in running if p.poll() is not None]:
            err = proc.stderr.read() if proc.stderr else ""
            if proc.returncode != 0:
                raise SystemExit(f"SB3 seed failed with exit code {proc.returncode}:\n{err[-2000:]}")
            peak = max(peak, peak_mib(err))
            running.remove(proc)
        time.sleep(0.05)
    return time.perf_counter() - start, peak


def run_case(case: str, seeds: int, steps: int, repeats: int, full: bool, sb3: bool) -> dict[str, Any]:
    sides = ["vectorized", "vectorized_parallel2", "parallel2"] + (["sb3"] if CASES[case].get("sb3") and sb3 else [])
    times: dict[str, list[float]] = {side: [] for side in sides}
    memory: dict[str, float] = {}
    finals: dict[str, list[float]] = {}  # every lab run's final evaluation, per seed
    for round_ in range(repeats):
        order = sides if round_ % 2 == 0 else list(reversed(sides))  # sides alternated
        for side in order:
            runs = Path(tempfile.mkdtemp(prefix="lab-bench-"))
            env = {**os.environ, "LAB_RUNS_DIR": str(runs), "MPLBACKEND": "Agg"}
            try:
                if side == "sb3":
                    seconds, peak = sb3_side(case, seeds, steps, env)
                else:
                    how = {"vectorized": ["--vectorize"], "vectorized_parallel2": ["--vectorize", "--parallel", "2"],
                           "parallel2": ["--parallel", "2"]}[side]
                    seconds, peak = timed(lab_command(case, seeds, steps, how, full, side), env)
                    if round_ == 0:  # (a run replays exactly in every round: one value per seed)
                        finals[side] = [json.loads((runs / f"{side}-s{seed}" / "summary.json").read_text())
                                        ["eval/return_mean"] for seed in range(1, seeds + 1)]
            finally:
                shutil.rmtree(runs, ignore_errors=True)
            times[side].append(round(seconds, 2))
            memory[side] = round(max(memory.get(side, 0.0), peak), 1)
            print(f"{case} {side} round {round_ + 1}: {seconds:.1f} s", file=sys.stderr, flush=True)
    medians = {side: statistics.median(values) for side, values in times.items()}
    result: dict[str, Any] = {
        "seeds": seeds, "steps_per_seed": steps, "full_protocol": full, "seconds": times, "median_s": medians,
        "speedup_vs_parallel2": {side: round(medians["parallel2"] / medians[side], 2)
                                 for side in ("vectorized", "vectorized_parallel2")},
        # the vectorized process holds every member (each of two processes half of them); a separate run one
        "peak_rss_mib": memory, "rss_per_member_mib": {"vectorized": round(memory["vectorized"] / seeds, 1),
                                                       "vectorized_parallel2": round(memory["vectorized_parallel2"]
                                                                                     / -(-seeds // 2), 1),
                                                       "parallel2": memory["parallel2"]},
    }
    # do the members learn as separate runs do? their final returns against the separate runs'
    # (the same seeds and budget): a two-sided Mann-Whitney U test, large p = no difference found
    from scipy.stats import mannwhitneyu

    result["final_return"] = {side: {"median": statistics.median(values), "values": values}
                              for side, values in finals.items()}
    result["final_return_vs_parallel2_p"] = {
        side: round(float(mannwhitneyu(finals[side], finals["parallel2"]).pvalue), 3)
        for side in ("vectorized", "vectorized_parallel2")}
    if "sb3" in medians:
        result["speedup_vs_sb3_2_at_a_time"] = {side: round(medians["sb3"] / medians[side], 2)
                                                for side in ("vectorized", "vectorized_parallel2")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="cartpole,halfcheetah")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100_000, help="steps per seed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-protocol", action="store_true", help="the lab's evaluations and videos on")
    parser.add_argument("--no-sb3", action="store_true", help="leave the SB3 side out")
    parser.add_argument("--json", action="store_true")
    add_load_option(parser)
    args = parser.parse_args()
    with busy_processes(args.load):
        results = {case: run_case(case, args.seeds, args.steps, args.repeats, args.full_protocol,
                                  sb3=not (args.no_sb3 or args.full_protocol))
                   for case in args.cases.split(",")}
    report = {"machine": describe("cpu"), "load": args.load, "cases": results}
    print(json.dumps(report, indent=2) if args.json else report)


if __name__ == "__main__":
    main()
