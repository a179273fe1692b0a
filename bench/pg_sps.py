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
Each side first runs one rollout and update untimed (start-up), then `--rollouts` rollouts
and updates are timed. Sides alternate for `--repeats` rounds; medians and their ratio are
reported, with the share of the lab's time spent collecting (env + acting) vs updating.

    python bench/pg_sps.py --json [--cases halfcheetah,cartpole,breakout] [--repeats 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from _machine import describe  # noqa: E402
from lab.context import Context  # noqa: E402
from lab.discovery import load_lab  # noqa: E402
from lab.plugins.ppo import PPO, PPOConfig  # noqa: E402
from lab.tracking import Tracker  # noqa: E402

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
    ctx = Context(device=torch.device(device), seed=seed, total_steps=10**9, run_dir=Path(tempfile.mkdtemp()),
                  registry=load_lab().registry, tracker=Tracker(), env_id=CASES[case]["env"])
    agent = PPO(PPOConfig(**settings(case)), ctx)
    collect_time = 0.0
    original = agent.collect_rollout

    def timed_collect() -> None:
        nonlocal collect_time
        start = time.perf_counter()
        original()
        collect_time += time.perf_counter() - start

    agent.collect_rollout = timed_collect  # type: ignore[method-assign]
    try:
        agent.train_step()  # start-up: first rollout and update
        ctx.pop_episodes()
        collect_time, start, before = 0.0, time.perf_counter(), agent.global_step
        for _ in range(rollouts):
            agent.train_step()
            ctx.pop_episodes()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="halfcheetah,cartpole,breakout")
    parser.add_argument("--rollouts", type=int, default=0, help="timed rollouts per run (0: a per-case default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    default_rollouts = {"halfcheetah": 4, "cartpole": 20, "breakout": 3}
    results: dict[str, Any] = {"bench": "pg_sps", "machine": describe(args.device), "cases": {}}
    for case in args.cases.split(","):
        rollouts = args.rollouts or default_rollouts[case]
        lab_runs, sb3_runs, collect_shares = [], [], []
        for _ in range(args.repeats):  # alternate sides
            sps, share = lab_sps(case, rollouts, args.device, args.seed)
            lab_runs.append(round(sps, 1))
            collect_shares.append(round(share, 3))
            sb3_runs.append(round(sb3_sps(case, rollouts, args.device, args.seed), 1))
            print(f"{case}: lab {lab_runs[-1]} sb3 {sb3_runs[-1]}", file=sys.stderr)
        lab_median, sb3_median = statistics.median(lab_runs), statistics.median(sb3_runs)
        results["cases"][case] = {
            "env": CASES[case]["env"], "settings": settings(case), "timed_rollouts": rollouts,
            "lab": {"sps_median": lab_median, "sps_runs": lab_runs, "collect_share": statistics.median(collect_shares)},
            "sb3": {"sps_median": sb3_median, "sps_runs": sb3_runs},
            "speedup": round(lab_median / sb3_median, 2),
        }
    print(json.dumps(results, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
