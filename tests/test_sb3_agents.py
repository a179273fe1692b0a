"""sb3-dqn / sb3-ppo / sb3-a2c: the env adapter, short runs, checkpoints, the runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_jsonl
from lab.api import LabError, Tracker
from lab.cli import main
from lab.envs.gymnasium_env import make_gymnasium
from lab.plugins.sb3_agents.env import LabSB3VecEnv
from lab.run.context import RunContext
from lab.run.discovery import load_lab

SMALL_DQN = dict(learning_starts=200, buffer_size=2_000, train_freq=16, gradient_steps=4, net_arch=(32,))


def make_ctx(tmp_path: Path, env_id: str, total_steps: int = 2_000) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, total_steps=total_steps, run_dir=tmp_path,
                   registry=load_lab().registry, tracker=Tracker(), env_id=env_id, eval_episodes=2)


def build(name: str, tmp_path: Path, env_id: str, total_steps: int = 2_000, **overrides):
    cls = load_lab().registry.algorithm(name)
    preset = {k: v for k, v in cls.presets.get(env_id, {}).items() if k != "steps"}
    config = cls.Config(**{**preset, **overrides})
    return cls(config, make_ctx(tmp_path, env_id, total_steps))


def test_adapter_turns_next_step_into_same_step_autoreset():
    venv = LabSB3VecEnv([make_gymnasium("CartPole-v1", seed=s) for s in (0, 1)])
    obs = venv.reset()
    assert obs.shape == (2, 4)
    lengths, ended = np.zeros(2, int), []
    for _ in range(60):
        obs, rewards, dones, infos = venv.step(np.zeros(2, dtype=np.int64))  # always left: falls fast
        assert rewards.tolist() == [1.0, 1.0]  # the autoreset step (reward 0) is never shown to SB3
        lengths += 1
        for i in np.flatnonzero(dones):
            final = infos[i]["terminal_observation"]
            assert abs(final[2]) > 0.2 or abs(final[0]) > 2.4  # the pole fell in the final observation
            assert np.abs(obs[i]).max() <= 0.05  # ...and obs is already the next episode's first
            assert infos[i]["TimeLimit.truncated"] is False
            ended.append(int(lengths[i]))
            lengths[i] = 0
    episodes = [e.length for env in venv.envs for e in env.pop_episodes()]
    assert sorted(episodes) == sorted(ended) and len(ended) >= 4
    venv.close()


def test_sb3_dqn_learns_on_the_lab_buffer_and_resumes_its_schedule(tmp_path):
    agent = build("sb3-dqn", tmp_path, "CartPole-v1", **SMALL_DQN)
    from lab.plugins.sb3_agents.replay import SB3ReplayBuffer

    assert isinstance(agent.model.replay_buffer, SB3ReplayBuffer)
    metrics = {}
    while agent.global_step < 600:
        metrics.update(agent.train_step())
    assert metrics["train/loss"] > 0 and "train/epsilon" in metrics
    eps = agent.model.exploration_rate
    torch.save({"algorithm": agent.state_dict(), "envs": agent.ctx.env_states()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    resumed = build("sb3-dqn", tmp_path, "CartPole-v1", total_steps=50_000, **SMALL_DQN)
    resumed.ctx.load_env_states(state["envs"], agent.global_step)
    resumed.load_state_dict(state["algorithm"])
    assert resumed.global_step == agent.global_step
    assert resumed.model.exploration_rate == pytest.approx(eps)  # horizon kept, not the new budget
    for a, b in zip(agent.model.policy.parameters(), resumed.model.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.model.replay_buffer.pos == agent.model.replay_buffer.pos > 0
    resumed.train_step()


def test_sb3_dqn_refuses_continuous_actions(tmp_path):
    with pytest.raises(LabError, match="discrete actions"):
        build("sb3-dqn", tmp_path, "Pendulum-v1")


def test_sb3_a2c_handles_continuous_actions(tmp_path):
    agent = build("sb3-a2c", tmp_path, "Pendulum-v1", num_envs=2)
    metrics = agent.train_step()
    assert agent.global_step == 2 * 5 and "train/value_loss" in metrics
    metrics = agent.evaluate()
    assert metrics["eval/length_mean"] == 200  # Pendulum always runs to its time limit
    actions = agent.act(torch.zeros(3, 3), deterministic=False)
    assert actions.shape == (3, 1) and bool((actions.abs() <= 2.0).all())


def test_sb3_ppo_through_the_cli(tmp_path):
    code = main(["train", "sb3-ppo", "--env", "CartPole-v1", "--steps", "1024", "--eval-episodes", "2",
                 "--name", "ppo", "--video", "false"])
    assert code == 0
    rows = read_jsonl(tmp_path / "runs" / "ppo" / "metrics.jsonl")
    assert any("train/loss" in r for r in rows)
    returns = [r["train/episode_return"] for r in rows if "train/episode_return" in r]
    assert returns and all(r >= 8 for r in returns)  # CartPole pays 1 per step
    assert any("eval/return_mean" in r for r in rows)
    assert rows[-1]["global_step"] == 1024


def test_sb3_schedules_hold_their_final_value_past_the_budget():
    """`lab resume --steps` beyond the budget: SB3's progress_remaining goes negative there,
    and RL Zoo's `lin_` schedules would turn the learning rate and clip range negative."""
    from lab.plugins.sb3_agents import SB3Agent

    lr = SB3Agent.schedule(1e-3, True)
    assert lr(1.0) == pytest.approx(1e-3) and lr(0.5) == pytest.approx(5e-4)
    assert lr(0.0) == 0.0 and lr(-0.5) == 0.0
    assert SB3Agent.schedule(0.2, False)(-1.0) == pytest.approx(0.2)


def test_sb3_ppo_extended_past_its_budget_keeps_a_non_negative_learning_rate(tmp_path):
    from lab.cli import main

    common = ["--num-envs", "2", "--n-steps", "64", "--n-epochs", "1", "--batch-size", "64", "--anneal", "true",
              "--video", "false", "--eval-episodes", "1"]
    assert main(["train", "sb3-ppo", "--env", "CartPole-v1", "--steps", "256", *common, "--name", "ppo"]) == 0
    run = tmp_path / "runs" / "ppo"
    assert main(["resume", str(run), "--steps", "512"]) == 0
    rows = read_jsonl(run / "metrics.jsonl")
    rates = [r["train/learning_rate"] for r in rows if "train/learning_rate" in r]
    clips = [r["train/clip_range"] for r in rows if "train/clip_range" in r]
    assert rates and min(rates) >= 0.0 and min(clips) >= 0.0
    assert rows[-1]["global_step"] == 512


def test_on_policy_budgets_round_to_whole_rollouts(tmp_path, capsys):
    from lab.cli import main

    assert main(["train", "sb3-ppo", "--env", "CartPole-v1", "--steps", "300", "--num-envs", "2", "--n-steps", "64",
                 "--n-epochs", "1", "--batch-size", "64", "--video", "false", "--eval-episodes", "1",
                 "--name", "round"]) == 0
    assert "--steps 300 rounded up to 384" in capsys.readouterr().err
    summary = json.loads((tmp_path / "runs" / "round" / "summary.json").read_text())
    assert summary["global_step"] == summary["target_steps"] == 384


def test_sb3_dqn_keeps_the_replay_ratio_with_more_envs():
    from lab.plugins.sb3_agents import SB3DQNConfig, sb3_train_frequency

    assert sb3_train_frequency(4, 1, 1) == (4, 1)
    assert sb3_train_frequency(4, 1, 2) == (2, 1)  # every 2 vector steps = 4 agent steps
    assert sb3_train_frequency(4, 1, 8) == (1, 2)  # every vector step = 8 agent steps: 2 gradient steps
    assert sb3_train_frequency(4, -1, 8) == (1, -1)
    with pytest.raises(ValueError, match="one must divide the other"):
        SB3DQNConfig(train_freq=4, num_envs=3)
