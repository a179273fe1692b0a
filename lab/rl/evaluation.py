"""The evaluation protocol every agent shares (`Agent.evaluate`, `lab eval`).

Episodes run on an evaluation env (`ctx.make_env(evaluation=True)`): for Atari that means
full games (all lives), raw game score, sticky actions 0.25 (`--eval-sticky-actions`; the
Atari 100k presets: 0) and a 108k-frame cap. Each
env of the vector env plays a fixed quota of episodes, so short episodes are not
over-represented (first-N-finished would bias the mean towards them). Reported: mean and
std of the returns (population std), mean length, and, where the env's family publishes
reference scores (`EnvFamily.reference_scores`: Atari's random and human scores), the
normalised score (score - random) / (human - random) of the mean.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lab.api import Context, LabError, Policy, VecEnv
from lab.files import writing

MAX_EVAL_ENVS = 8


def evaluation_seed(ctx: Context, step: int) -> int:
    """The evaluation envs' seed at `step`: new games at every evaluation (so `best` is not
    the maximum over the same episodes replayed), never the training envs' seeds, and the
    same games for `lab eval` of the checkpoint saved at that step."""
    return ctx.rng.seed_for("evaluation", step)


def episode_quotas(episodes: int, num_envs: int) -> np.ndarray:
    """Split `episodes` over `num_envs` as evenly as possible (fixed before any env runs)."""
    quotas = np.full(num_envs, episodes // num_envs, dtype=np.int64)
    quotas[: episodes % num_envs] += 1
    return quotas


def run_episodes(env: VecEnv, policy: Policy, episodes: int,
                 check_stop: Callable[[], None] = lambda: None) -> tuple[list[float], list[int]]:
    """Play `episodes` whole episodes on `env` with `policy`; returns (returns, lengths).

    Scores come from the evaluation env's rewards (unclipped there); the step after a
    `terminated | truncated` is the NEXT_STEP autoreset and is not counted. `check_stop` is
    called before every vector step (`ctx.check_stop`: long games stop within seconds of a signal).
    """
    if episodes < 1:
        raise LabError(f"--episodes must be >= 1 (got {episodes})")
    remaining = episode_quotas(episodes, env.num_envs)
    score = np.zeros(env.num_envs, dtype=np.float64)
    length = np.zeros(env.num_envs, dtype=np.int64)
    autoreset = np.zeros(env.num_envs, dtype=bool)
    returns: list[float] = []
    lengths: list[int] = []
    obs = env.reset()
    while remaining.any():
        check_stop()
        with torch.inference_mode():
            actions = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(actions)
        reward_np = reward.double().cpu().numpy()
        done = (terminated | truncated).cpu().numpy()
        counted = ~autoreset
        score += np.where(counted, reward_np, 0.0)
        length += counted
        for i in np.flatnonzero(done):
            if remaining[i] > 0:
                returns.append(float(score[i]))
                lengths.append(int(length[i]))
                remaining[i] -= 1
            score[i] = 0.0
            length[i] = 0
        autoreset = done
    return returns, lengths


def summarize(returns: list[float], lengths: list[int], normalized: Callable[[float], float | None]) -> dict[str, float]:
    """The metrics `evaluate()` reports; `normalized(score)` is the env family's normalisation."""
    metrics = {
        "eval/return_mean": float(np.mean(returns)),
        "eval/return_std": float(np.std(returns)),
        "eval/length_mean": float(np.mean(lengths)),
    }
    norm = normalized(metrics["eval/return_mean"])
    if norm is not None:
        metrics["eval/normalized_score"] = norm
    return metrics


def evaluate_policy(
    ctx: Context,
    policy: Policy,
    episodes: int,
    seed: int,
    normalized: Callable[[float], float | None] = lambda score: None,
    num_envs: int | None = None,
) -> dict[str, float]:
    """Run the evaluation protocol for `policy` on the run's env from `seed`; returns `eval/*`
    metrics (`normalized(score)`: the env family's normalisation, see `summarize`)."""
    n = num_envs or min(episodes, MAX_EVAL_ENVS)
    env = ctx.make_env(num_envs=n, evaluation=True, seed=seed)
    try:
        returns, lengths = run_episodes(env, policy, episodes, ctx.check_stop)
    finally:
        env.close()
    return summarize(returns, lengths, normalized)


def record_video(
    ctx: Context,
    policy: Policy,
    path: Path,
    seed: int,
    max_steps: int = 2_000,
) -> Path:
    """Play one evaluation episode from `seed` (at most `max_steps` agent steps) and write it as MP4."""
    import imageio.v2 as imageio

    env = ctx.make_env(num_envs=1, evaluation=True, render=True, seed=seed)
    try:
        obs = env.reset()
        frames = [env.render()]
        for _ in range(max_steps):
            ctx.check_stop()
            with torch.inference_mode():
                actions = policy(obs)
            obs, _, terminated, truncated, _ = env.step(actions)
            if bool((terminated | truncated)[0]):
                break
            frames.append(env.render())
        fps = int(getattr(env, "render_fps", 30))
    finally:
        env.close()
    with writing(path, "write video", "move the run folder where there is room"):
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimwrite(path, [_even(frame) for frame in frames], fps=fps, codec="libx264", macro_block_size=1)
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 (yuv420p) needs even width and height: pad by one pixel where odd."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
