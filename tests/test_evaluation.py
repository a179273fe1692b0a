"""The evaluation protocol: fixed per-env quotas, true scores, normalisation, videos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from lab.api import Agent, Tracker
from lab.rl.evaluation import episode_quotas, evaluate_policy, run_episodes, summarize
from lab.run.context import RunContext
from lab.run.discovery import load_lab


class FixedLengthEnv:
    """Env i ends an episode every lengths[i] steps, paying reward 1 per counted step.

    Follows NEXT_STEP autoreset: the step after a terminal pays 0 and starts a new episode.
    """

    def __init__(self, lengths: list[int]):
        self.lengths = np.array(lengths)
        self.num_envs = len(lengths)
        self.device = torch.device("cpu")
        self.t = np.zeros(self.num_envs, dtype=int)
        self.after_done = np.zeros(self.num_envs, dtype=bool)

    def reset(self, seed=None):
        self.t[:] = 0
        self.after_done[:] = False
        return torch.zeros(self.num_envs, 1)

    def step(self, actions):
        reward = np.where(self.after_done, 0.0, 1.0)
        self.t = np.where(self.after_done, 0, self.t + 1)
        done = self.t == self.lengths
        self.after_done = done
        return (torch.zeros(self.num_envs, 1), torch.as_tensor(reward, dtype=torch.float32),
                torch.as_tensor(done), torch.zeros(self.num_envs, dtype=torch.bool), {})

    def pop_episodes(self):
        return []

    def close(self):
        pass


def test_quotas_split_evenly():
    assert episode_quotas(10, 4).tolist() == [3, 3, 2, 2]
    assert episode_quotas(3, 3).tolist() == [1, 1, 1]


def test_short_episodes_do_not_dominate():
    # env 0 finishes 50x more episodes than env 1; first-6-finished would be all short ones
    env = FixedLengthEnv([2, 100])
    returns, lengths = run_episodes(env, lambda obs: torch.zeros(len(obs)), episodes=6)
    assert sorted(lengths) == [2, 2, 2, 100, 100, 100]
    assert returns == [float(n) for n in lengths]  # the autoreset step is not counted


def test_summary_metrics_and_normalized_score():
    from lab.run.discovery import load_lab

    registry = load_lab().registry
    metrics = summarize([1.7, 30.5], [10, 20], lambda score: registry.normalized_score("ALE/Breakout-v5", score))
    assert metrics["eval/return_mean"] == pytest.approx(16.1)
    assert metrics["eval/return_std"] == pytest.approx(14.4)
    assert metrics["eval/length_mean"] == 15.0
    assert metrics["eval/normalized_score"] == pytest.approx(0.5)
    assert "eval/normalized_score" not in summarize([1.0], [1], lambda score: registry.normalized_score("CartPole-v1", score))


def make_ctx(tmp_path: Path, env_id: str, episodes: int = 4) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, total_steps=100, run_dir=tmp_path,
                   registry=load_lab().registry, tracker=Tracker(), env_id=env_id, eval_episodes=episodes)


class PoleBalancer(Agent):
    """A hand-written CartPole controller: push towards where the pole is falling."""

    name = "pole-balancer"

    @dataclass
    class Config:
        pass

    def train_step(self):
        self.global_step += 1
        return {}

    def act(self, obs, deterministic=True):
        return (obs[:, 2] + obs[:, 3] > 0).long()


def test_agent_evaluate_runs_the_protocol_on_cartpole(tmp_path):
    agent = PoleBalancer(PoleBalancer.Config(), make_ctx(tmp_path, "CartPole-v1", episodes=5))
    metrics = agent.evaluate()
    assert set(metrics) == {"eval/return_mean", "eval/return_std", "eval/length_mean"}
    assert metrics["eval/return_mean"] >= 195  # the controller balances; random scores ~22
    assert metrics["eval/return_mean"] == metrics["eval/length_mean"]
    random_metrics = evaluate_policy(agent.ctx, lambda obs: torch.randint(0, 2, (len(obs),)), episodes=5, seed=0)
    assert random_metrics["eval/return_mean"] < 100


def test_agent_writes_an_mp4_video(tmp_path):
    agent = PoleBalancer(PoleBalancer.Config(), make_ctx(tmp_path, "CartPole-v1"))
    agent.video_max_steps = 40
    media = agent.write_media(agent.ctx.media_dir)
    path = media["eval/video"]
    assert path.suffix == ".mp4" and path.parent == tmp_path / "media"
    frames = imageio.mimread(path)
    assert len(frames) == 41 and frames[0].shape == (400, 600, 3)


def test_atari_evaluation_reports_full_game_scores_and_normalized_score(tmp_path):
    ctx = make_ctx(tmp_path, "ALE/Breakout-v5", episodes=2)
    gen = torch.Generator().manual_seed(0)
    metrics = ctx.evaluate_policy(lambda obs: torch.randint(0, 4, (len(obs),), generator=gen), step=0)
    # a random Breakout player loses all 5 lives in well over 100 steps (one life: ~30)
    assert metrics["eval/length_mean"] > 100
    assert metrics["eval/normalized_score"] == pytest.approx((metrics["eval/return_mean"] - 1.7) / (30.5 - 1.7))


def test_media_is_never_overwritten(tmp_path):
    """`lab eval --video` at the step of the training video writes a second file."""
    agent = PoleBalancer(PoleBalancer.Config(), make_ctx(tmp_path, "CartPole-v1"))
    agent.video_max_steps = 10
    first = agent.write_media(agent.ctx.media_dir)["eval/video"]
    before = first.read_bytes()
    second = agent.write_media(agent.ctx.media_dir)["eval/video"]
    assert second != first and second.name == first.stem + "-2.mp4"
    assert first.read_bytes() == before
