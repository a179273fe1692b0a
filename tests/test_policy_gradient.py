"""Policy-gradient agents (`reinforce`, `a2c`, `ppo`) and their shared services: the
actor-critic, running normalisation, the rollout loop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import read_jsonl
from lab.cli import main
from lab.rl.normalize import Normalizer, RunningMeanStd
from lab.rl.policies import ActorCritic


def runs_dir() -> Path:
    return Path(os.environ["LAB_RUNS_DIR"])


def test_running_statistics_match_numpy():
    data = np.random.default_rng(0).normal(3.0, 2.0, (1000, 3))
    stats = RunningMeanStd((3,), torch.device("cpu"), epsilon=0.0)
    for chunk in np.array_split(data, 7):
        stats.update(torch.as_tensor(chunk))
    assert np.allclose(stats.mean.numpy(), data.mean(0)) and np.allclose(stats.var.numpy(), data.var(0))


def test_normalizer_scales_observations_and_rewards_and_round_trips():
    norm = Normalizer((2,), 2, torch.device("cpu"), obs=True, reward=True, gamma=0.9)
    rng = torch.Generator().manual_seed(0)
    for _ in range(200):
        norm.obs(torch.randn(2, 2, generator=rng) * 5 + 10, update=True)
        norm.reward(torch.ones(2), torch.tensor([False, True]), torch.tensor([True, True]))
    scaled = norm.obs(torch.full((1, 2), 10.0))
    assert scaled.abs().max() < 0.3  # the running mean is about 10
    assert norm.obs(torch.full((1, 2), 1e6)).max() == 10.0  # clipped
    copy = Normalizer((2,), 2, torch.device("cpu"), obs=True, reward=True, gamma=0.9)
    copy.load_state_dict(norm.state_dict())
    assert torch.equal(copy.obs(torch.ones(3, 2)), norm.obs(torch.ones(3, 2)))
    off = Normalizer((2,), 2, torch.device("cpu"), obs=False, reward=False, gamma=0.9)
    assert torch.equal(off.obs(torch.ones(1, 2) * 7), torch.ones(1, 2) * 7)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-2.0, 1.0, (2,))])
def test_actor_critic_samples_with_exact_log_probs_and_clips_for_the_env(space):
    policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), space)
    obs = torch.randn(500, 4)
    step = policy.step(obs, torch.Generator().manual_seed(1))
    again = policy.step(obs, torch.Generator().manual_seed(1))
    assert torch.equal(step.actions, again.actions)  # a function of the stream: resumable
    out, values = policy(obs)
    assert torch.allclose(policy.log_prob(out, step.actions), step.log_probs) and torch.equal(values, step.values)
    # the hand-written distributions agree with torch.distributions
    if isinstance(space, gym.spaces.Box):
        reference = torch.distributions.Normal(out, policy.log_std.exp().expand_as(out))
        expected_log_prob, expected_entropy = reference.log_prob(step.actions).sum(-1), reference.entropy().sum(-1)
    else:
        reference = torch.distributions.Categorical(logits=out)
        expected_log_prob, expected_entropy = reference.log_prob(step.actions), reference.entropy()
        frequencies = torch.bincount(step.actions, minlength=3).float() / len(step.actions)
        assert torch.allclose(frequencies, reference.probs.mean(0), atol=0.06)  # sampled as pi says
    assert torch.allclose(step.log_probs, expected_log_prob, atol=1e-5)
    assert torch.allclose(policy.entropy(out), expected_entropy, atol=1e-5)
    env_actions = policy.to_env(step.actions)
    if isinstance(space, gym.spaces.Box):
        assert env_actions.shape == (500, 2) and env_actions.min() >= -2 and env_actions.max() <= 1
        assert (step.actions > 1).any()  # stored unclipped, so log-probs stay exact
    else:
        assert env_actions.dtype == torch.int64 and set(env_actions.tolist()) == {0, 1, 2}
    assert policy.act(obs[:3], deterministic=True).shape[0] == 3


def test_image_observations_share_one_nature_cnn_trunk():
    policy = ActorCritic(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(4))
    convs = [m for m in policy.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3  # one trunk, not one per head
    log_probs, values = policy(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))
    assert log_probs.shape == (2, 4) and values.shape == (2,)


@pytest.mark.parametrize("algo, args", [
    ("ppo", ["--env", "CartPole-v1", "--steps", "1024", "--num-envs", "2", "--n-steps", "64", "--batch-size", "32"]),
    ("a2c", ["--env", "CartPole-v1", "--steps", "1000", "--num-envs", "4"]),
    ("reinforce", ["--env", "CartPole-v1", "--steps", "1000", "--num-envs", "2", "--n-steps", "250"]),
    ("ppo", ["--env", "Pendulum-v1", "--steps", "512", "--n-steps", "128", "--norm-obs", "--norm-reward"]),
    ("a2c", ["--env", "MountainCarContinuous-v0", "--steps", "400", "--num-envs", "2"]),
])
def test_agents_train_from_the_cli_with_true_scores(algo, args):
    assert main(["train", algo, *args, "--eval-episodes", "2", "--video", "false", "--name", "pg"]) == 0
    run = runs_dir() / "pg"
    rows = read_jsonl(run / "metrics.jsonl")
    assert any("train/policy_gradient_loss" in r or "train/policy_loss" in r for r in rows)
    assert any("train/explained_variance" in r for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["eval/return_mean"] is not None
    assert summary["global_step"] == summary["target_steps"]


def test_ppo_atari_smoke_with_the_cleanrl_preset():
    assert main(["train", "ppo", "--env", "BreakoutNoFrameskip-v4", "--steps", "256", "--num-envs", "2",
                 "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--eval-episodes", "1",
                 "--video", "false", "--name", "atari"]) == 0
    doc = json.loads(json.dumps(__import__("yaml").safe_load((runs_dir() / "atari" / "config.yaml").read_text())))
    assert doc["preset"] == "atari" and doc["config"]["clip_range"] == 0.1
    assert doc["config"]["ent_coef"] == 0.01 and doc["config"]["anneal_lr"] is True


def test_horizon_sets_what_the_learning_rate_anneals_over_and_resume_keeps_it():
    common = ["--env", "CartPole-v1", "--num-envs", "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1",
              "--anneal-lr", "--learning-rate", "0.001", "--log-interval", "128", "--eval-episodes", "1",
              "--video", "false"]
    assert main(["train", "ppo", *common, "--steps", "1024", "--horizon", "4096", "--name", "h"]) == 0
    run = runs_dir() / "h"
    doc = __import__("yaml").safe_load((run / "config.yaml").read_text())
    assert (doc["total_steps"], doc["horizon"]) == (1024, 4096)
    rates = [r["train/learning_rate"] for r in read_jsonl(run / "metrics.jsonl") if "train/learning_rate" in r]
    assert rates[-1] > 0.7e-3, "a quarter of the way through a 4,096-step schedule, not at its end"
    assert main(["resume", str(run), "--steps", "4096"]) == 0
    rates = [r["train/learning_rate"] for r in read_jsonl(run / "metrics.jsonl") if "train/learning_rate" in r]
    assert rates[-1] < 0.05e-3, "the resumed run finishes the same schedule"
    assert main(["train", "ppo", *common, "--steps", "1024", "--name", "budget"]) == 0
    rates = [r["train/learning_rate"] for r in read_jsonl(runs_dir() / "budget" / "metrics.jsonl")
             if "train/learning_rate" in r]
    assert rates[-1] < 0.2e-3, "without --horizon the budget is the horizon"


def test_normalisation_is_saved_and_applied_by_lab_load():
    import lab

    assert main(["train", "ppo", "--env", "Pendulum-v1", "--steps", "512", "--n-steps", "256", "--norm-obs",
                 "--eval-episodes", "1", "--video", "false", "--name", "norm"]) == 0
    agent = lab.load(runs_dir() / "norm", checkpoint="latest")
    try:
        assert agent.normalizer.obs_stats.count > 500  # the statistics came back
        obs = torch.tensor([[1.0, 0.0, 0.5]])
        assert torch.equal(agent.act(obs), agent.policy.act(agent.normalizer.obs(obs)))
        assert agent.act(obs).abs().max() <= 2.0  # clipped to Pendulum's torque range
    finally:
        agent.close()


def test_reinforce_refuses_bootstrapped_advantages(capsys):
    assert main(["train", "reinforce", "--env", "CartPole-v1", "--gae-lambda", "0.9"]) == 2
    assert "Monte-Carlo" in capsys.readouterr().err


@pytest.mark.slow
def test_ppo_preset_solves_cartpole_within_its_budget():
    assert main(["train", "ppo", "--env", "CartPole-v1", "--video", "false", "--name", "solve"]) == 0
    summary = json.loads((runs_dir() / "solve" / "summary.json").read_text())
    assert summary["target_steps"] == 100_096 and summary["best"] >= 475, summary  # whole rollouts of 8 x 32
