"""dqn: targets, schedules, checkpoints, and short runs on CartPole and Breakout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import read_jsonl
from lab.api import LabError, Tracker
from lab.cli import main
from lab.plugins.dqn import DQN, DQNConfig
from lab.rl.offpolicy import crossings
from lab.rl.qnetworks import QNetwork
from lab.run.checkpoint import load_checkpoint
from lab.run.context import RunContext
from lab.run.discovery import load_lab
from lab.run.session import saved_horizon


def make_ctx(tmp_path: Path, env_id: str, total_steps: int = 1_000, seed: int = 0) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=seed, total_steps=total_steps, run_dir=tmp_path,
                   registry=load_lab().registry, tracker=Tracker(), env_id=env_id, eval_episodes=2)


def small_config(**overrides) -> DQNConfig:
    base = dict(learning_starts=50, buffer_size=1_000, batch_size=16, train_freq=4, target_update_interval=20,
                exploration_fraction=0.5, net_arch=(16,))
    return DQNConfig(**{**base, **overrides})


class TableQ(torch.nn.Module):
    """A stand-in Q-network: the Q-values in row k of `table` for an observation of k's."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(table)

    def outputs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.table[obs[:, 0].long()]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.outputs(obs)


def test_double_dqn_target_uses_online_argmax_and_target_values(tmp_path):
    rewards = torch.tensor([1.0, 0.5])
    discounts = torch.tensor([0.9, 0.81])  # gamma^k for the n steps actually summed
    dones = torch.tensor([0.0, 1.0])
    observations, next_observations = torch.zeros(2, 4), torch.tensor([[1.0] * 4, [2.0] * 4])
    online = TableQ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # at s' the online net prefers action 1 then 0
    target = TableQ([[0.0, 0.0], [10.0, 2.0], [3.0, 4.0]])
    for double_q, expected in ((True, [1.0 + 0.9 * 2.0, 0.5]), (False, [1.0 + 0.9 * 10.0, 0.5])):
        agent = DQN(small_config(double_q=double_q), make_ctx(tmp_path, "CartPole-v1"))
        agent.q, agent.q_target = online, target
        _, td_errors = agent.td_loss(observations, torch.zeros(2), rewards, discounts, dones, next_observations,
                                     torch.ones(2))
        assert (-td_errors).tolist() == pytest.approx(expected)  # Q(s, a) 0; terminal: no bootstrap


def test_dueling_head_centres_advantages():
    net = QNetwork((4,), 3, (8,), dueling=True)
    obs = torch.randn(5, 4)
    q = net(obs)
    features = net.torso(obs)
    value = net.value(features)
    assert torch.allclose(q.mean(dim=1, keepdim=True), value, atol=1e-6)


def test_dueling_streams_follow_wang_et_al():
    """Atari: the convolutions are shared, then a value and an advantage stream of 512 units each."""
    net = QNetwork((4, 84, 84), 6, dueling=True)
    assert not any(isinstance(m, torch.nn.Linear) for m in net.torso.modules())
    for stream, outputs in ((net.value, 1), (net.advantage, 6)):
        linears = [m for m in stream.modules() if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(3136, 512), (512, outputs)]
    assert net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 6)
    mlp = QNetwork((4,), 3, (32, 16), dueling=True)  # vector inputs: the last hidden layer per stream
    assert [m.out_features for m in mlp.torso.modules() if isinstance(m, torch.nn.Linear)] == [32]
    assert mlp.value[0].out_features == 16 and mlp.advantage[0].out_features == 16


def test_epsilon_schedule_and_interval_crossings(tmp_path):
    agent = DQN(small_config(learning_starts=0, exploration_final_eps=0.05, exploration_fraction=0.1),
                make_ctx(tmp_path, "CartPole-v1", total_steps=1000))
    for step, epsilon in ((0, 1.0), (50, 0.525), (900, 0.05), (5000, 0.05)):
        agent.global_step = step
        assert agent.epsilon() == pytest.approx(epsilon)
    assert crossings(0, 8, 4) == 2 and crossings(3, 4, 4) == 1 and crossings(4, 7, 4) == 0


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="gradient-steps"):
        DQNConfig(gradient_steps=0)
    with pytest.raises(ValueError, match="learning-rate must be positive"):
        DQNConfig(learning_rate=-1)
    with pytest.raises(ValueError, match="exploration-final-eps"):
        DQNConfig(exploration_final_eps=1.5)
    with pytest.raises(ValueError, match="num-atoms must be >= 2 with --distributional qr"):
        DQNConfig(distributional="qr", num_atoms=1)
    with pytest.raises(ValueError, match="v-min must be below --v-max"):
        DQNConfig(distributional="c51", v_min=1.0, v_max=1.0)
    DQNConfig(num_atoms=1, v_min=1.0, v_max=0.0)  # expected values read neither


def test_continuous_actions_are_refused(tmp_path):
    with pytest.raises(LabError, match="discrete actions"):
        DQN(small_config(), make_ctx(tmp_path, "Pendulum-v1"))


def test_epsilon_schedule_survives_a_state_dict_round_trip(tmp_path):
    agent = DQN(small_config(num_envs=2), make_ctx(tmp_path, "CartPole-v1", total_steps=400))
    while agent.global_step < 120:
        metrics = agent.train_step()
    assert "train/loss" in metrics and agent.epsilon() < 1.0
    torch.save({"algorithm": agent.state_dict(), "envs": agent.ctx.env_states(),
                "runner": {"horizon": agent.ctx.total_steps}}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)

    # a resumed run (`lab resume --steps 4000`) is built with the horizon the runner saved
    resumed = DQN(small_config(num_envs=2), make_ctx(tmp_path, "CartPole-v1",
                                                     total_steps=saved_horizon(state, default=4_000)))
    assert resumed.ctx.load_env_states(state["envs"], agent.global_step) == []  # CartPole continues exactly
    resumed.load_state_dict(state["algorithm"])
    assert torch.equal(resumed.obs, agent.obs)
    assert resumed.global_step == agent.global_step
    assert resumed.epsilon() == pytest.approx(agent.epsilon())
    assert len(resumed.buffer) >= len(agent.buffer) > 0  # every stored transition is back
    for a, b in zip(agent.q.parameters(), resumed.q.parameters(), strict=True):
        assert torch.equal(a, b)
    resumed.train_step()  # learning continues from the restored buffer


@pytest.mark.parametrize("options", [
    dict(double_q=True, dueling=True, n_step=3),
    dict(prioritized_replay=True, gradient_steps=-1),
])
def test_variants_learn_without_errors(tmp_path, options):
    agent = DQN(small_config(**options), make_ctx(tmp_path, "CartPole-v1"))
    betas, sample = [], agent.buffer.sample
    agent.buffer.sample = lambda batch_size, beta=None: betas.append(beta) or sample(batch_size, beta=beta)
    before = [p.clone() for p in agent.q.parameters()]
    losses = [agent.train_step().get("train/loss") for _ in range(100)]
    assert any(loss is not None for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.q.parameters(), strict=True))
    if options.get("prioritized_replay"):  # PER's exponent is passed to each sample, annealed towards 1
        assert 0.4 < betas[0] < betas[-1] <= 1.0 and betas == sorted(betas)
    else:
        assert set(betas) == {None}


def test_target_network_updates_on_interval(tmp_path):
    agent = DQN(small_config(target_update_interval=60), make_ctx(tmp_path, "CartPole-v1"))
    for _ in range(59):
        agent.train_step()
    assert not all(torch.equal(a, b) for a, b in zip(agent.q.parameters(), agent.q_target.parameters(), strict=True))
    agent.train_step()  # step 60 crosses the interval: hard copy (tau = 1)
    assert all(torch.equal(a, b) for a, b in zip(agent.q.parameters(), agent.q_target.parameters(), strict=True))


def test_atari_smoke_through_the_cli(tmp_path):
    """A few hundred Breakout steps with the real runner: frames stacked, scores logged."""
    code = main(["train", "dqn", "--env", "BreakoutNoFrameskip-v4", "--steps", "480", "--num-envs", "2",
                 "--learning-starts", "440", "--buffer-size", "2000", "--batch-size", "4",
                 "--eval-episodes", "1", "--eval-interval", "480", "--name", "atari", "--video", "false"])
    assert code == 0
    run = Path(tmp_path / "runs" / "atari")
    rows = read_jsonl(run / "metrics.jsonl")
    returns = [r["train/episode_return"] for r in rows if "train/episode_return" in r]
    assert returns and all(float(r).is_integer() and r >= 0 for r in returns)
    assert any("train/loss" in r for r in rows)
    evals = [r for r in rows if "eval/return_mean" in r]
    assert evals and "eval/normalized_score" in evals[-1]
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state is not None


@pytest.mark.slow
def test_dqn_preset_solves_cartpole_within_its_default_budget(tmp_path):
    """`lab train dqn --env CartPole-v1` as the README shows it: the preset's 50k-step budget
    (not 10M) and an evaluation return of at least 475 (CartPole's 'solved') within it."""
    code = main(["train", "dqn", "--env", "CartPole-v1", "--name", "cartpole", "--video", "false"])
    assert code == 0
    run = tmp_path / "runs" / "cartpole"
    assert yaml.safe_load((run / "config.yaml").read_text())["total_steps"] == 50_000
    rows = read_jsonl(run / "metrics.jsonl")
    evals = [r["eval/return_mean"] for r in rows if "eval/return_mean" in r]
    assert rows[-1]["global_step"] == 50_000 and len(evals) == 10 and max(evals) >= 475, evals


def test_best_checkpoint_leaves_out_replay_and_eval_allocates_none(monkeypatch):
    import os

    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "800", "--learning-starts", "200",
                 "--eval-episodes", "2", "--video", "false", "--name", "lean"]) == 0
    run = Path(os.environ["LAB_RUNS_DIR"]) / "lean"
    latest = load_checkpoint(run / "checkpoints" / "latest.pt")["algorithm"]
    best = load_checkpoint(run / "checkpoints" / "best.pt")["algorithm"]
    assert "buffers" in latest and "buffers" not in best and best["q"].keys() == latest["q"].keys()
    built = []
    original = DQN.__init__

    def spy(self, config, ctx):
        original(self, config, ctx)
        built.append(self.buffer)

    monkeypatch.setattr(DQN, "__init__", spy)
    assert main(["eval", str(run), "--episodes", "2", "--checkpoint", "best"]) == 0
    assert built == [None]
