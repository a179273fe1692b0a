"""Steps per second of the lab's DQN against Stable-Baselines3's DQN on Breakout.

Both learn with identical hyperparameters and replay ratio (one gradient step of 32
transitions every 4 agent steps, RL Zoo's Atari DQN apart from a short warm-up and a
smaller buffer); the timed window starts after learning has begun. The peer is SB3 as a
user runs it: `make_atari_env` (AtariWrapper) + `VecFrameStack(4)` + `DQN("CnnPolicy")`.
`--num-envs 1,2,4,8` reports the lab's SPS curve over env counts; `--sb3-num-envs 1,8` runs
SB3 at those counts too, with its `train_freq` (counted in vector steps) and
`gradient_steps` set so that the replay ratio stays one batch per 4 agent steps. Prints one
JSON object.

    python bench/atari_sps.py --algo dqn --json [--num-envs 1,2,4,8] [--sb3-num-envs 1,8] [--steps 2000]
"""

from __future__ import annotations

import os

# Both peers: torch's OpenMP threads must not spin while the emulator threads work.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ENV_ID = "BreakoutNoFrameskip-v4"


def hyperparameters(args: argparse.Namespace) -> dict:
    return dict(learning_rate=1e-4, buffer_size=args.buffer_size, learning_starts=args.warmup, batch_size=32,
                tau=1.0, gamma=0.99, train_freq=4, gradient_steps=1, target_update_interval=1000,
                exploration_fraction=0.1, exploration_final_eps=0.01, max_grad_norm=10.0)


def lab_dqn_sps(args: argparse.Namespace, device: torch.device, num_envs: int) -> float:
    from lab.context import Context
    from lab.discovery import load_lab
    from lab.plugins.dqn import DQN, DQNConfig
    from lab.tracking import Tracker

    total = args.warmup + args.steps
    ctx = Context(device=device, seed=0, total_steps=10_000_000, run_dir=Path(tempfile.mkdtemp()),
                  registry=load_lab().registry, tracker=Tracker(), env_id=ENV_ID)
    agent = DQN(DQNConfig(**hyperparameters(args), num_envs=num_envs), ctx)
    while agent.global_step < args.warmup + 4 * num_envs:
        agent.train_step()
    start_step, start = agent.global_step, time.perf_counter()
    while agent.global_step < total:
        agent.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    sps = (agent.global_step - start_step) / (time.perf_counter() - start)
    agent.close()
    return sps


def sb3_dqn_sps(args: argparse.Namespace, device: torch.device, num_envs: int) -> float:
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(ENV_ID, n_envs=num_envs, seed=0), n_stack=4)
    params = hyperparameters(args)
    # SB3 counts train_freq in vector steps: keep one gradient step per 4 agent steps
    params.update(train_freq=max(1, 4 // num_envs), gradient_steps=max(1, num_envs // 4))
    model = DQN("CnnPolicy", env, device=device, seed=0, verbose=0, optimize_memory_usage=False, **params)
    model.learn(total_timesteps=args.warmup + 4 * num_envs)
    start_step, start = model.num_timesteps, time.perf_counter()
    model.learn(total_timesteps=args.steps, reset_num_timesteps=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sps = (model.num_timesteps - start_step) / (time.perf_counter() - start)
    env.close()
    return sps


def buffer_bytes(transitions: int) -> dict:
    """Device bytes of a 1M-transition Atari replay buffer: the lab's (allocated on the meta
    device, so nothing is really allocated) and SB3's (its numpy layout, computed)."""
    from lab.buffers import ReplayBuffer

    lab = ReplayBuffer(transitions, (4, 84, 84), 1, "meta", frame_stack=4, generator=torch.Generator())
    frame_stack_obs = 4 * 84 * 84
    sb3 = transitions * (2 * frame_stack_obs + 8 + 4 + 4 + 4)  # obs, next_obs, action, reward, done, timeout
    sb3_optimized = transitions * (frame_stack_obs + 8 + 4 + 4 + 4)
    return {"transitions": transitions, "lab_gb": lab.storage_bytes / 1e9, "sb3_gb": sb3 / 1e9,
            "sb3_optimize_memory_gb": sb3_optimized / 1e9, "lab_fits_7_2_gb": lab.storage_bytes <= 7.2e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="dqn", choices=["dqn"])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-envs", default="1", help="comma-separated env counts for the lab's curve")
    parser.add_argument("--steps", type=int, default=2_000, help="timed agent steps after learning starts")
    parser.add_argument("--warmup", type=int, default=1_000, help="agent steps before learning (learning_starts)")
    parser.add_argument("--buffer-size", type=int, default=50_000)
    parser.add_argument("--sb3-num-envs", default="1", help="comma-separated env counts for SB3")
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    counts = [int(n) for n in args.num_envs.split(",")]

    result: dict = {
        "env": ENV_ID, "device": str(device), "hyperparameters": hyperparameters(args),
        "timed_steps": args.steps, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                               "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                                               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
    }
    curve = {n: lab_dqn_sps(args, device, n) for n in counts}
    if not args.skip_sb3:
        sb3_curve = {n: sb3_dqn_sps(args, device, n) for n in (int(n) for n in args.sb3_num_envs.split(","))}
        for n in sb3_curve.keys() - curve.keys():  # the lab at every count SB3 ran at
            curve[n] = lab_dqn_sps(args, device, n)
        result["sb3_sps_by_num_envs"] = {str(n): round(s, 1) for n, s in sb3_curve.items()}
        result["speedup_by_num_envs"] = {str(n): round(curve[n] / s, 2) for n, s in sb3_curve.items()}
        if 1 in sb3_curve:
            result.update(lab_sps=round(curve[1], 1), sb3_sps=round(sb3_curve[1], 1),
                          speedup=round(curve[1] / sb3_curve[1], 2))
    result["lab_sps_by_num_envs"] = {str(n): round(s, 1) for n, s in sorted(curve.items())}
    result["replay_buffer_1m"] = buffer_bytes(1_000_000)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
