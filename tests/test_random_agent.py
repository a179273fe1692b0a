"""The `random` agent end to end: the smallest real plugin through the real runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import torch

from conftest import read_jsonl
from lab.cli import main
from lab.plugins.random_agent import sample_actions


def test_sample_actions_cover_discrete_and_box_spaces():
    gen = torch.Generator().manual_seed(0)
    actions = sample_actions(gym.spaces.Discrete(3), 3000, gen, torch.device("cpu"))
    counts = torch.bincount(actions, minlength=3)
    assert counts.sum() == 3000 and (counts > 900).all()
    box = gym.spaces.Box(low=-2.0, high=2.0, shape=(1,))
    sampled = sample_actions(box, 500, gen, torch.device("cpu"))
    assert sampled.shape == (500, 1) and sampled.min() >= -2 and sampled.max() <= 2 and sampled.std() > 0.5


def test_random_cartpole_run_then_eval_with_video(capsys):
    assert main(["train", "random", "--env", "CartPole-v1", "--steps", "600", "--num-envs", "2",
                 "--name", "rnd", "--eval-episodes", "4"]) == 0
    run = Path(os.environ["LAB_RUNS_DIR"]) / "rnd"
    rows = read_jsonl(run / "metrics.jsonl")
    episodes = [r for r in rows if "train/episode_return" in r]
    assert len(episodes) > 10
    # CartPole pays 1 per step, so the true return equals the length of every episode
    assert all(r["train/episode_return"] == r["train/episode_length"] for r in episodes)
    assert 8 < sum(r["train/episode_return"] for r in episodes) / len(episodes) < 60
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 600
    assert list((run / "media").glob("*.mp4")), "end-of-training video missing"

    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3", "--video"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["episodes"] == 3 and result["global_step"] == 600
    assert result["eval/return_mean"] > 5 and "eval/return_std" in result
    assert Path(result["media"]["eval/video"]).stat().st_size > 1000
    # eval adds no rows to the training record
    assert read_jsonl(run / "metrics.jsonl") == rows


def test_random_rejects_bad_num_envs(capsys):
    assert main(["train", "random", "--env", "CartPole-v1", "--num-envs", "0"]) == 2
    assert "--num-envs must be >= 1" in capsys.readouterr().err


def test_unknown_env_suggests_close_matches(capsys):
    assert main(["train", "random", "--env", "CartPol-v1"]) == 2
    err = capsys.readouterr().err
    assert "unknown env 'CartPol-v1'" in err and "CartPole-v1" in err
