"""The off-policy service and its agents: networks, target updates, sac and td3 end to end."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import lab
from conftest import one_line_error, read_jsonl, runs_dir
from lab.cli import main
from lab.plugins.sac import EntropyCoefficient, SACConfig
from lab.rl.actors import ActionScale, DeterministicActor, SquashedGaussianActor, TwinQ
from lab.rl.offpolicy import soft_update


def test_the_squashed_gaussian_log_prob_is_the_change_of_variables() -> None:
    torch.manual_seed(0)
    actor = SquashedGaussianActor(3, 2, (16,))
    obs = torch.randn(64, 3)
    actions, log_prob = actor.sample(obs, torch.Generator().manual_seed(1))
    mean, log_std = actor.distribution(obs)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    clipped = actions.clamp(-1 + 1e-6, 1 - 1e-6)  # the reference inverts tanh: keep it finite
    torch.testing.assert_close(log_prob, reference.log_prob(clipped).sum(-1), atol=1e-3, rtol=1e-4)
    assert actions.abs().max() <= 1 and torch.equal(actor.mode(obs), torch.tanh(mean))


def test_twin_critics_are_two_independent_mlps_in_one_batched_network() -> None:
    torch.manual_seed(0)
    twin = TwinQ(3, 2, (8, 8))
    obs, actions = torch.randn(5, 3), torch.randn(5, 2)
    q = twin(obs, actions)
    assert q.shape == (2, 5)
    for i in range(2):  # each critic as a plain stack of Linear layers with the same weights
        layers = []
        for j, (weight, bias) in enumerate(zip(twin.weights, twin.biases, strict=True)):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            linear.weight.data, linear.bias.data = weight[i].T.clone(), bias[i, 0].clone()
            layers += [linear] + ([nn.ReLU()] if j < len(twin.weights) - 1 else [])
        torch.testing.assert_close(q[i], nn.Sequential(*layers)(torch.cat([obs, actions], -1)).squeeze(-1))
    q[0].sum().backward()
    assert twin.weights[0].grad[1].abs().sum() == 0, "one critic's loss reaches only its own weights"


def test_target_smoothing_and_action_scaling_stay_in_bounds() -> None:
    actor = DeterministicActor(3, 2, (8,))
    smoothed = actor.smoothed(torch.randn(100, 3), noise=5.0, clip=0.5, generator=torch.Generator().manual_seed(0))
    assert smoothed.abs().max() <= 1 and ((smoothed - actor(torch.zeros(1, 3))).abs() > 0).any()
    scale = ActionScale(gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)))
    x = torch.tensor([[-1.0, 1.0], [0.0, 0.0]])
    assert torch.equal(scale.to_env(x), torch.tensor([[-2.0, 10.0], [0.0, 5.0]]))
    torch.testing.assert_close(scale.from_env(scale.to_env(x)), x)


def test_soft_update_is_polyak_averaging_and_tau_one_a_copy() -> None:
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    soft_update(target, online, 0.25)
    for new, old, src in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * src)
    soft_update(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters(), strict=True))


@pytest.mark.parametrize("algo", ["sac", "td3", "sb3-sac", "sb3-td3"])
def test_continuous_agents_train_evaluate_deterministically_and_serve_python(algo: str, capsys) -> None:
    assert main(["train", algo, "--env", "Pendulum-v1", "--steps", "600", "--learning-starts", "200",
                 "--eval-interval", "300", "--eval-episodes", "2", "--net-arch", "32,32", "--batch-size", "32",
                 "--name", algo]) == 0
    run = runs_dir() / algo
    rows = read_jsonl(run / "metrics.jsonl")
    losses = [r["train/critic_loss"] for r in rows if "train/critic_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert any("train/actor_loss" in r for r in rows)
    evals = [r for r in rows if "eval/return_mean" in r]
    assert [r["global_step"] for r in evals] == [300, 600]
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--checkpoint", "latest"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--episodes", "2", "--checkpoint", "latest"]) == 0
    assert json.loads(capsys.readouterr().out)["eval/return_mean"] == first["eval/return_mean"], \
        "the evaluation policy is deterministic (the mean action) on the same games"
    agent = lab.load(run, checkpoint="latest")
    try:
        action = agent.act(np.zeros(3))
        assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0, "actions come in the env's box"
        assert agent.act(np.zeros((4, 3))).shape == (4, 1)
    finally:
        agent.close()


@pytest.mark.parametrize("algo", ["sac", "td3", "sb3-sac"])
def test_discrete_envs_are_refused_in_one_line(algo: str, capsys) -> None:
    one_line_error(capsys, ["train", algo, "--env", "CartPole-v1"], "needs continuous actions")
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_sac_tunes_its_entropy_coefficient_and_td3_delays_its_actor(capsys) -> None:
    for algo in ("sac", "td3"):
        assert main(["train", algo, "--env", "Pendulum-v1", "--steps", "500", "--learning-starts", "100",
                     "--log-interval", "50", "--net-arch", "16", "--batch-size", "16", "--video", "false",
                     "--name", f"{algo}-tune"]) == 0
    sac = read_jsonl(runs_dir() / "sac-tune" / "metrics.jsonl")
    coefficients = [r["train/ent_coef"] for r in sac if "train/ent_coef" in r]
    assert coefficients[0] < 1.0 and coefficients[-1] < coefficients[0], "alpha falls from 1 towards the target"
    td3 = torch.load(runs_dir() / "td3-tune" / "checkpoints" / "latest.pt", weights_only=True)["algorithm"]
    assert td3["updates"] == 400, "one critic update per agent step after learning starts"
    actor, target = td3["actor"], td3["actor_target"]
    assert any(not torch.equal(actor[k], target[k]) for k in actor), "the target trails the actor (tau 0.005)"


def test_the_entropy_coefficient_is_read_once_into_a_value() -> None:
    assert EntropyCoefficient.parse("auto") == EntropyCoefficient(1.0, tuned=True)
    assert EntropyCoefficient.parse("auto_0.1") == EntropyCoefficient(0.1, tuned=True)
    assert EntropyCoefficient.parse("0.2") == EntropyCoefficient(0.2, tuned=False)
    for bad, message in (("auto_", "takes a number"), ("autox", "takes a number"), ("auto_auto", "takes a number"),
                         ("-1", "must be a positive finite number"), ("auto_0", "must be a positive finite number")):
        with pytest.raises(ValueError, match=f"--ent-coef {message}"):
            SACConfig(ent_coef=bad)
    assert SACConfig(target_entropy="-0.5").entropy_target == -0.5 and SACConfig().entropy_target is None
    with pytest.raises(ValueError, match="--target-entropy takes a number or auto"):
        SACConfig(target_entropy="auto_1")


@pytest.mark.parametrize("algo, env", [("dqn", "CartPole-v1"), ("td3", "Pendulum-v1")])
def test_timing_the_learning_phase_during_warm_up_changes_nothing_the_run_computes(algo, env, monkeypatch) -> None:
    """measure_pace runs real updates (PER priorities, target smoothing noise, TD3's counter)
    and puts everything back: a run with it logs exactly what a run without it logs."""
    from lab.rl import offpolicy

    measured = []
    real = offpolicy.OffPolicyAgent.measure_pace
    monkeypatch.setattr(offpolicy.OffPolicyAgent, "measure_pace",
                        lambda self: measured.append(real(self)) or measured[-1])
    flags = ["--steps", "1300", "--learning-starts", "1200", "--batch-size", "16", "--net-arch", "16",
             "--log-interval", "20", "--eval-interval", "1300", "--eval-episodes", "1", "--video", "false"]
    extra = ["--prioritized-replay", "true"] if algo == "dqn" else []
    assert main(["train", algo, "--env", env, *flags, *extra, "--name", "timed"]) == 0
    assert len(measured) == 1 and measured[0].starts == 1200 and measured[0].extra_s > 0
    monkeypatch.setattr(offpolicy, "PACE_MIN_WARMUP", 10**9)  # never measured
    assert main(["train", algo, "--env", env, *flags, *extra, "--name", "untimed"]) == 0
    assert len(measured) == 1

    def computed(name: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("time", "perf/sps")}
                for r in read_jsonl(runs_dir() / name / "metrics.jsonl")]

    assert computed("timed") == computed("untimed")


def test_the_eta_counts_the_learning_phase_at_its_speed_from_the_first_step() -> None:
    from lab.api import Pace
    from lab.run.progress import RunProgress

    progress = RunProgress("dqn", 100_000, 0)
    progress.rate = 1000.0  # warm-up: 1,000 steps/s
    assert progress.eta(0) == pytest.approx(100.0)
    progress.pace = Pace(starts=20_000, extra_s=0.009)  # learning: 1 ms + 9 ms a step
    assert progress.eta(0) == pytest.approx(20 + 80_000 * 0.010)
    assert progress.eta(50_000) == pytest.approx(50.0), "past the warm-up the recent rate is the pace"
    progress.close()
