"""sb3-dqn / sb3-ppo / sb3-a2c: the env adapter, short runs, checkpoints, the runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_jsonl
from lab.cli import main
from lab.context import Context
from lab.discovery import load_lab
from lab.envs.gymnasium_env import make_gymnasium
from lab.errors import LabError
from lab.plugins._sb3_env import LabSB3VecEnv
from lab.tracking import Tracker


SMALL_DQN = dict(learning_starts=200, buffer_size=2_000, train_freq=16, gradient_steps=4, net_arch=(32,))


def make_ctx(tmp_path: Path, env_id: str, total_steps: int = 2_000) -> Context:
    return Context(device=torch.device("cpu"), seed=0, total_steps=total_steps, run_dir=tmp_path,
                   registry=load_lab().registry, tracker=Tracker(), env_id=env_id, eval_episodes=2)


def build(name: str, tmp_path: Path, env_id: str, total_steps: int = 2_000, **overrides):
    cls = load_lab().registry.algorithm(name)
    config = cls.Config(**{**cls.presets.get(env_id, {}), **overrides})
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
    from lab.buffers.sb3 import SB3ReplayBuffer

    assert isinstance(agent.model.replay_buffer, SB3ReplayBuffer)
    metrics = {}
    while agent.global_step < 600:
        metrics.update(agent.train_step())
    assert metrics["train/loss"] > 0 and "train/epsilon" in metrics
    eps = agent.model.exploration_rate
    state = agent.state_dict()
    torch.save(state, tmp_path / "s.pt")
    resumed = build("sb3-dqn", tmp_path, "CartPole-v1", total_steps=50_000, **SMALL_DQN)
    resumed.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert resumed.global_step == agent.global_step
    assert resumed.model.exploration_rate == pytest.approx(eps)  # horizon kept, not the new budget
    for a, b in zip(agent.model.policy.parameters(), resumed.model.policy.parameters()):
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
