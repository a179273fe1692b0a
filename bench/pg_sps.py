"""Steps per second of the lab's PPO against Stable-Baselines3's PPO, same hyperparameters.

Cases (the policy-gradient issue's):
  halfcheetah  HalfCheetah-v5, 8 envs, n_steps 256, batch 64, 10 epochs, MLP 64x64
  cartpole     CartPole-v1, 8 envs, n_steps 128, batch 256, 4 epochs, MLP 64x64
  breakout     BreakoutNoFrameskip-v4, CleanRL's ppo_atari: 8 envs, n_steps 128, batch 256,
               4 epochs, Nature CNN, frame stack 4
Both sides: lr 3e-4 (2.5e-4 on Atari) constant, clip 0.2 (0.1 on Atari), gamma 0.99, GAE 0.95,
entropy 0 (0.01 on Atari), value weight 0.5, grad norm 0.5, advantage normalisation, Adam
eps 1e-5, tanh MLPs with orthogonal init. The peer is SB3 as a user runs it: `make_vec_env`
(DummyVecEnv: envs step one after another) or, for Atari, `make_atari_env` + `VecFrameStack`.
Each side runs in its own fresh process with its library's own defaults, as its users get
them: SB3 with torch's default threads and OpenMP settings; the lab as `lab train` runs
(importing `lab` sets OpenMP's passive waiting for the Atari emulator threads, and the agent
picks its torch threads: 1 for MLP policies). Each side first runs one rollout and update
untimed (start-up), then `--rollouts` rollouts and updates are timed. Sides alternate for
`--repeats` rounds; medians and their ratio are reported, with the share of the lab's time
spent collecting (env + acting) rather than updating. `--load N` runs N busy processes
beside both sides, as on a machine that is rarely idle.

    python bench/pg_sps.py --json [--cases halfcheetah,cartpole,breakout] [--repeats 3] [--load 1]
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

CASES: dict[str, dict[str, Any]] = {
    "halfcheetah": dict(env="HalfCheetah-v5", num_envs=8, n_steps=256, batch_size=64, n_epochs=10),
    "cartpole": dict(env="CartPole-v1", num_envs=8, n_steps=128, batch_size=256, n_epochs=4),
    "breakout": dict(env="BreakoutNoFrameskip-v4", num_envs=8, n_steps=128, batch_size=256, n_epochs=4,
                     learning_rate=2.5e-4, clip_range=0.1, ent_coef=0.01),
}
COMMON = dict(learning_rate=3e-4, clip_range=0.2, gamma=0.99, gae_lambda=0.95, ent_coef=0.0, vf_coef=0.5,
              max_grad_norm=0.5)


def settings(case: str) -> dict[str, Any]:
    return {**COMMON, **{k: v for k, v in CASES[case].items() if k != "env"}}


def lab_sps(case: str, rollouts: int, device: str, seed: int) -> tuple[float, float]:
    """(steps/s, fraction of the time spent collecting rollouts) for the lab's PPO."""
    import torch
    from _machine import threads_as_the_runner_sets_them

    from lab.api import Tracker
    from lab.plugins.ppo import PPO, PPOConfig
    from lab.run.context import RunContext
    from lab.run.discovery import load_lab

    ctx = RunContext(device=torch.device(device), seed=seed, total_steps=10**9, run_dir=Path(tempfile.mkdtemp()),
                  registry=load_lab().registry, tracker=Tracker(), env_id=CASES[case]["env"])
    agent = PPO(PPOConfig(**settings(case)), ctx)
    cores = threads_as_the_runner_sets_them(agent, device)
    collect_time = 0.0
    original = agent.collect_rollout

    def timed_collect() -> None:
        nonlocal collect_time
        start = time.perf_counter()
        original()
        collect_time += time.perf_counter() - start

    agent.collect_rollout = timed_collect  # type: ignore[method-assign]
    def train_step() -> None:  # as the runner steps it
        if cores is not None:
            cores.adjust()
        agent.train_step()
        ctx.pop_episodes()

    try:
        train_step()  # start-up: first rollout and update
        collect_time, start, before = 0.0, time.perf_counter(), agent.global_step
        for _ in range(rollouts):
            train_step()
        elapsed = time.perf_counter() - start
        return (agent.global_step - before) / elapsed, collect_time / elapsed
    finally:
        agent.close()
        ctx.close_envs()


def sb3_sps(case: str, rollouts: int, device: str, seed: int) -> float:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    params = settings(case)
    num_envs = params.pop("num_envs")
    env_id = CASES[case]["env"]
    if "NoFrameskip" in env_id:
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        venv = VecFrameStack(make_atari_env(env_id, n_envs=num_envs, seed=seed), n_stack=4)
        policy, kwargs = "CnnPolicy", {}
    else:
        venv = make_vec_env(env_id, n_envs=num_envs, seed=seed)
        policy, kwargs = "MlpPolicy", {"policy_kwargs": dict(net_arch=[64, 64])}
    model = SB3PPO(policy, venv, device=device, seed=seed, verbose=0, **params, **kwargs)
    per_rollout = params["n_steps"] * num_envs
    model.learn(per_rollout)  # start-up
    start, before = time.perf_counter(), model.num_timesteps
    model.learn(per_rollout * rollouts, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    venv.close()
    return (model.num_timesteps - before) / elapsed


def worker(side: str, case: str, rollouts: int, device: str, seed: int) -> dict[str, float]:
    if side == "lab":
        sps, share = lab_sps(case, rollouts, device, seed)
        return {"sps": sps, "collect_share": share}
    return {"sps": sb3_sps(case, rollouts, device, seed)}


def measure(side: str, case: str, rollouts: int, device: str, seed: int) -> dict[str, float]:
    """One side's run in a fresh process whose environment is that library's default."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    result = subprocess.run(
        [sys.executable, __file__, "--worker", side, "--cases", case, "--rollouts", str(rollouts),
         "--device", device, "--seed", str(seed)],
        capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from _machine import add_load_option

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="halfcheetah,cartpole,breakout")
    parser.add_argument("--rollouts", type=int, default=0, help="timed rollouts per run (0: a per-case default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=("lab", "sb3"), help=argparse.SUPPRESS)
    add_load_option(parser)
    args = parser.parse_args()
    default_rollouts = {"halfcheetah": 4, "cartpole": 20, "breakout": 3}
    if args.worker:
        print(json.dumps(worker(args.worker, args.cases, args.rollouts, args.device, args.seed)))
        return
    from _machine import busy_processes, describe

    with busy_processes(args.load):
        results = run_cases(args, default_rollouts, describe(args.device))
    print(json.dumps(results, indent=None if args.json else 2))


def run_cases(args: argparse.Namespace, default_rollouts: dict[str, int], machine: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"bench": "pg_sps", "machine": machine, "load": args.load, "cases": {}}
    for case in args.cases.split(","):
        rollouts = args.rollouts or default_rollouts[case]
        runs: dict[str, list[dict[str, float]]] = {"lab": [], "sb3": []}
        for _ in range(args.repeats):  # alternate sides
            for side in ("lab", "sb3"):
                runs[side].append(measure(side, case, rollouts, args.device, args.seed))
            print(f"{case}: lab {runs['lab'][-1]['sps']:.0f} sb3 {runs['sb3'][-1]['sps']:.0f}", file=sys.stderr)
        medians = {side: statistics.median(r["sps"] for r in runs[side]) for side in runs}
        results["cases"][case] = {
            "env": CASES[case]["env"], "settings": settings(case), "timed_rollouts": rollouts,
            "lab": {"sps_median": round(medians["lab"], 1), "sps_runs": [round(r["sps"], 1) for r in runs["lab"]],
                    "collect_share": statistics.median(r["collect_share"] for r in runs["lab"])},
            "sb3": {"sps_median": round(medians["sb3"], 1), "sps_runs": [round(r["sps"], 1) for r in runs["sb3"]]},
            "speedup": round(medians["lab"] / medians["sb3"], 2),
        }
    return results


if __name__ == "__main__":
    main()
