"""Rainbow's pieces: the C51 projection, QR-DQN's loss, noisy layers, DrQ shifts, `rainbow`
and `--preset`, and the cnn's random rotations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import ok, one_line_error, read_jsonl, runs_dir
from lab.api import Tracker
from lab.augment import random_intensity, random_rotation, random_shift
from lab.plugins.dqn import DQN, DQNConfig
from lab.plugins.rainbow import Rainbow
from lab.rl.distributional import Categorical, Quantiles, categorical_projection, quantile_huber_loss
from lab.rl.noisy import NoisyLinear, remove_noise, resample_noise
from lab.rl.qnetworks import QNetwork
from lab.run.checkpoint import load_checkpoint
from lab.run.context import RunContext
from lab.run.discovery import load_lab
from lab.run.settings import resolve

DOCS_EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------- C51 and QR

def test_projection_splits_each_atom_between_its_neighbours():
    support = torch.tensor([0.0, 1.0, 2.0])
    # gamma 0.5, reward 0.25: the atoms move to 0.25, 0.75 and 1.25 (worked by hand)
    target = categorical_projection(torch.tensor([0.25]), torch.tensor([0.5]), torch.tensor([0.0]),
                                    torch.tensor([[0.2, 0.3, 0.5]]), support)
    assert target[0].tolist() == pytest.approx([0.2 * 0.75 + 0.3 * 0.25, 0.2 * 0.25 + 0.3 * 0.75 + 0.5 * 0.75,
                                                0.5 * 0.25])
    two = torch.tensor([0.0, 1.0])  # all mass at 0 moves to 0.5: half to each atom; 1.5 is clipped to 1
    assert categorical_projection(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.0]),
                                  torch.tensor([[1.0, 0.0]]), two)[0].tolist() == pytest.approx([0.5, 0.5])


def test_a_terminal_transition_collapses_onto_the_rewards_atoms():
    support = torch.tensor([0.0, 1.0, 2.0])
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    target = categorical_projection(torch.tensor([1.5, 7.0]), torch.tensor([0.9, 0.9]), torch.tensor([1.0, 1.0]),
                                    probs, support)
    assert target.tolist() == [pytest.approx([0.0, 0.5, 0.5]), pytest.approx([0.0, 0.0, 1.0])]  # 7 clips to 2


def reference_projection(rewards, discounts, dones, probs, support):
    """Bellemare et al. 2017, algorithm 1, one atom at a time."""
    v_min, v_max, n = support[0].item(), support[-1].item(), len(support)
    delta = (v_max - v_min) / (n - 1)
    out = torch.zeros_like(probs)
    for b in range(len(rewards)):
        for j in range(n):
            tz = min(max(float(rewards[b] + discounts[b] * (1 - dones[b]) * support[j]), v_min), v_max)
            pos = (tz - v_min) / delta
            low, up = math.floor(pos), math.ceil(pos)
            if low == up:
                out[b, low] += probs[b, j]
            else:
                out[b, low] += probs[b, j] * (up - pos)
                out[b, up] += probs[b, j] * (pos - low)
    return out


def test_projection_matches_the_papers_algorithm_and_keeps_the_mass():
    g = generator(0)
    support = torch.linspace(-10, 10, 51)
    rewards = torch.randn(16, generator=g) * 4
    discounts = torch.full((16,), 0.99 ** 3)
    dones = (torch.rand(16, generator=g) < 0.3).float()
    probs = torch.rand(16, 51, generator=g).softmax(dim=1)
    target = categorical_projection(rewards, discounts, dones, probs, support)
    assert torch.allclose(target, reference_projection(rewards, discounts, dones, probs, support), atol=1e-6)
    assert torch.allclose(target.sum(dim=1), torch.ones(16), atol=1e-6)


def test_quantile_loss_weighs_errors_by_their_quantile():
    # one quantile (tau 0.5) under its target by 0.5: 0.5 * Huber(0.5) = 0.5 * 0.125
    assert quantile_huber_loss(torch.tensor([[0.0]]), torch.tensor([[0.5]])).item() == pytest.approx(0.0625)
    # taus 0.25 and 0.75 both 2 below one target: |tau - 0| * (2 - 0.5), summed over the quantiles
    loss = quantile_huber_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0]]))
    assert loss.item() == pytest.approx(0.25 * 1.5 + 0.75 * 1.5)
    above = quantile_huber_loss(torch.tensor([[2.0, 2.0]]), torch.tensor([[0.0]]))  # over it: 1 - tau
    assert above.item() == pytest.approx(0.75 * 1.5 + 0.25 * 1.5)


def test_distributional_heads_give_expected_values_and_dueling_combines_logits():
    torch.manual_seed(0)
    net = QNetwork((4,), 3, (16, 16), dueling=True, head=Categorical(5, v_min=-2, v_max=2))
    obs = torch.randn(6, 4)
    logits = net.outputs(obs)
    assert logits.shape == (6, 3, 5)
    assert torch.allclose(net(obs), (logits.softmax(-1) * torch.linspace(-2, 2, 5)).sum(-1))
    qr = QNetwork((4,), 3, (16,), head=Quantiles(7))
    assert torch.allclose(qr(obs), qr.outputs(obs).mean(-1))
    assert not any("support" in key for key in net.state_dict())  # derived from the settings


# ------------------------------------------------------------- noisy nets

def test_noise_comes_from_the_stream_and_evaluation_uses_the_mean_weights():
    torch.manual_seed(0)
    layer = NoisyLinear(5, 3)
    x = torch.randn(4, 5)
    mean = F.linear(x, layer.weight_mu, layer.bias_mu)
    assert torch.equal(layer(x), mean)  # no noise before the first draw
    resample_noise(layer, generator(1))
    first = layer(x)
    resample_noise(layer, generator(1))
    assert torch.equal(layer(x), first)  # the same stream state, the same noise
    resample_noise(layer, generator(2))
    assert not torch.allclose(layer(x), first)
    remove_noise(layer)
    assert torch.equal(layer(x), mean)
    assert set(layer.state_dict()) == {"weight_mu", "weight_sigma", "bias_mu", "bias_sigma"}
    assert torch.allclose(layer.weight_sigma, torch.full((3, 5), 0.5 / 5 ** 0.5))


def test_shared_dueling_hidden_is_dopamines_network_with_half_the_weights():
    def size(net: torch.nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    frames = (4, 84, 84)
    per_stream = QNetwork(frames, 4, dueling=True, head=Categorical(), noisy_sigma=0.5)
    shared = QNetwork(frames, 4, dueling=True, dueling_hidden="shared", head=Categorical(), noisy_sigma=0.5)
    # Dopamine's FullRainbowNetwork: the convolutions, one 3136 -> 512 layer, then advantage and value heads on it
    layers = [(m.in_features, m.out_features) for m in shared.modules() if isinstance(m, NoisyLinear)]
    assert layers == [(3136, 512), (512, 4 * 51), (512, 51)]
    assert size(shared) < 0.55 * size(per_stream)
    obs = torch.randint(0, 256, (3, *frames), dtype=torch.uint8)
    assert shared.outputs(obs).shape == per_stream.outputs(obs).shape == (3, 4, 51)
    vectors = QNetwork((6,), 2, (16, 8), dueling=True, dueling_hidden="shared")  # every hidden layer shared
    assert [(m.in_features, m.out_features) for m in vectors.modules() if isinstance(m, torch.nn.Linear)] == [
        (6, 16), (16, 8), (8, 2), (8, 1)]


def make_agent(tmp_path: Path, cls: type = DQN, env_id: str = "CartPole-v1", **config) -> DQN:
    ctx = RunContext(device=torch.device("cpu"), seed=0, total_steps=1_000, run_dir=tmp_path,
                  registry=load_lab().registry, tracker=Tracker(), env_id=env_id, eval_episodes=2)
    base = dict(learning_starts=50, buffer_size=1_000, batch_size=16, train_freq=4, target_update_interval=20,
                net_arch=(16,))
    return cls(cls.Config(**{**base, **config}), ctx)


def test_noisy_agent_explores_with_noise_and_evaluates_deterministically(tmp_path):
    agent = make_agent(tmp_path, noisy=True, distributional="c51")
    while agent.global_step < 100:
        metrics = agent.train_step()
    assert "train/loss" in metrics and agent.epsilon() == 0.0
    layers = [m for m in agent.q.modules() if isinstance(m, NoisyLinear)]
    assert layers and all(m.noise_in.abs().sum() > 0 for m in layers)  # the last acting step drew noise
    obs = torch.randn(64, 4)
    first = agent.act(obs)
    assert all(m.noise_in.abs().sum() == 0 for m in layers)
    assert torch.equal(agent.act(obs), first) and torch.equal(first, agent.q(obs).argmax(1))
    state = agent.ctx.rng.generator("noise").get_state()
    noisy = agent.act(obs, deterministic=False)
    agent.ctx.rng.generator("noise").set_state(state)
    assert torch.equal(agent.act(obs, deterministic=False), noisy)  # the training policy replays from the stream


@pytest.mark.parametrize("distributional", ["none", "c51"])
def test_a_target_copied_after_every_update_is_read_from_the_online_pass(tmp_path, distributional):
    # DrQ(eps)'s target interval 1: the online pass over the next observations serves as the target's
    settings = dict(target_update_interval=1, train_freq=1, double_q=True, distributional=distributional)
    reusing, passing = make_agent(tmp_path / "a", **settings), make_agent(tmp_path / "b", **settings)
    assert reusing.target_is_online
    passing.target_is_online = False  # what the update did before: the target network's own pass
    passing.q.load_state_dict(reusing.q.state_dict()), passing.q_target.load_state_dict(reusing.q.state_dict())
    target_passes = []
    reusing.q_target.torso.register_forward_hook(lambda *_: target_passes.append(1))
    while reusing.global_step < 120:
        reusing.train_step(), passing.train_step()
    assert reusing.global_step > reusing.config.learning_starts and target_passes == []
    for mine, theirs in zip(reusing.q.state_dict().values(), passing.q.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)  # the same numbers, one pass fewer
    for other in (dict(noisy=True), dict(gradient_steps=2), dict(tau=0.5), dict(target_update_interval=2)):
        assert not make_agent(tmp_path / "c", **{**settings, **other}).target_is_online, other


# ------------------------------------------------------------- augmentation

def test_random_shift_is_a_shifted_copy_of_the_replicate_padded_input():
    images = torch.randint(0, 256, (12, 3, 10, 9), dtype=torch.uint8, generator=generator(0))
    shifted = random_shift(images, 4, generator(5))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    padded = F.pad(images.float(), (4, 4, 4, 4), mode="replicate").to(torch.uint8)
    offsets = []
    for i in range(len(images)):  # the slow reference: find the crop each sample is
        found = [(dy, dx) for dy in range(9) for dx in range(9)
                 if torch.equal(shifted[i], padded[i, :, dy:dy + 10, dx:dx + 9])]
        assert found, f"sample {i} is no crop of its padded image"
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # per-sample shifts
    assert torch.equal(random_shift(images, 4, generator(5)), shifted)  # the same stream state, the same shifts


def test_random_intensity_scales_each_sample_by_its_own_clipped_factor():
    images = torch.randint(1, 256, (400, 4, 6, 6), dtype=torch.uint8, generator=generator(0))
    scaled = random_intensity(images, 0.05, generator(3))
    assert scaled.dtype == torch.float32 and scaled.shape == images.shape
    factors = scaled / images.float()
    per_sample = factors.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))  # one factor a sample
    factor = per_sample[:, 0]
    assert factor.min() >= 0.9 - 1e-6 and factor.max() <= 1.1 + 1e-6  # 1 + 0.05 * clip(N(0, 1), -2, 2)
    assert (factor == 0.9).sum() + (factor == 1.1).sum() > 0  # 400 draws: some beyond 2 sigma, clipped
    assert 0.04 < factor.std() < 0.06
    assert torch.equal(random_intensity(images, 0.05, generator(3)), scaled)


def test_shift_intensity_is_a_shift_then_a_scale_from_the_augment_stream(tmp_path):
    agent = make_agent(tmp_path, env_id="BreakoutNoFrameskip-v4", augment="shift-intensity", net_arch=(64, 64))
    frames = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=generator(1))
    state = agent.augment_generator.get_state()
    augmented = agent.augmented(frames)
    replay = torch.Generator().set_state(state)
    assert torch.equal(augmented, random_intensity(random_shift(frames, 4, replay), 0.05, replay))
    agent.env.close()


def test_random_rotation_is_reproducible_and_keeps_zero_degrees_as_is():
    images = torch.rand(8, 1, 12, 12, generator=generator(0))
    assert torch.allclose(random_rotation(images, 0.0, generator(1)), images, atol=1e-5)
    rotated = random_rotation(images, 15.0, generator(1))
    assert rotated.shape == images.shape and not torch.allclose(rotated, images, atol=1e-3)
    assert torch.equal(random_rotation(images, 15.0, generator(1)), rotated)


def test_augment_needs_images(tmp_path):
    with pytest.raises(Exception, match="--augment shift shifts images"):
        make_agent(tmp_path, augment="shift")


# ------------------------------------------------------------- rainbow, presets, the CLI

def test_rainbow_trains_from_the_cli(capsys):
    ok(capsys, "train", "rainbow", "--env", "CartPole-v1", "--steps", "600", "--learning-starts", "200",
       "--batch-size", "32", "--train-freq", "4", "--gradient-steps", "1", "--net-arch", "32,32",
       "--eval-episodes", "2", "--video", "false", "--name", "rb")
    run = runs_dir() / "rb"
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["preset"] == "CartPole-v1" and doc["config"]["distributional"] == "c51"
    assert doc["config"]["noisy"] is True and doc["config"]["double_q"] and doc["config"]["prioritized_replay"]
    rows = read_jsonl(run / "metrics.jsonl")
    assert any("train/loss" in r for r in rows) and any("eval/return_mean" in r for r in rows)


def test_named_presets_resolve_and_an_unknown_name_is_one_line(capsys):
    registry = load_lab().registry
    der = resolve(DQN, {"env": "ALE/Breakout-v5", "preset": "atari100k"}, None, registry)
    assert der.preset == "atari100k" and der.preset_steps == 100_000 and der.run.eval_episodes == 100
    assert der.env_options.sticky_actions == 0.0 and der.env_options.eval_sticky_actions == 0.0  # the benchmark's
    assert resolve(DQN, {"env": "ALE/Breakout-v5"}, None, registry).env_options.eval_sticky_actions == 0.25
    c = der.algo
    assert (c.n_step, c.learning_starts, c.train_freq, c.gradient_steps, c.target_update_interval) == (20, 1_600, 1, 1,
                                                                                                       2_000)
    assert (c.learning_rate, c.adam_eps, c.noisy, c.dueling, c.distributional, c.prioritized_replay) == (
        1e-4, 1.5e-4, True, True, "c51", True)
    assert c.dueling_hidden == "shared" and DQNConfig().dueling_hidden == "per-stream"  # Dopamine's DER network
    drq = resolve(Rainbow, {"env": "ALE/Pong-v5", "preset": "atari100k-drq", "n_step": 5}, None, registry).algo
    assert (drq.augment, drq.noisy, drq.distributional, drq.target_update_interval, drq.n_step, drq.dueling_hidden) == (
        "shift", False, "none", 1, 5, "shared")  # flags still win over the preset
    assert resolve(Rainbow, {"env": "ALE/Pong-v5"}, None, registry).algo.learning_starts == 20_000  # `atari`
    line = one_line_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--preset", "atari100"],
                          "dqn has no preset 'atari100'", "atari100k", "--preset takes one of")
    assert "CartPole-v1" in line


def test_atari100k_preset_from_the_cli_records_what_applied(capsys):
    ok(capsys, "train", "dqn", "--env", "ALE/Breakout-v5", "--preset", "atari100k", "--augment", "shift",
       "--steps", "300", "--learning-starts", "240", "--buffer-size", "2000", "--eval-episodes", "1",
       "--eval-exploration-eps", "1", "--video", "false", "--compile", "false", "--name", "a100k")
    doc = yaml.safe_load((runs_dir() / "a100k" / "config.yaml").read_text())
    assert doc["preset"] == "atari100k" and doc["run"]["preset"] == "atari100k"
    assert doc["run"]["sticky_actions"] == 0.0 and doc["run"]["eval_interval"] == 100_000
    assert doc["config"]["n_step"] == 20 and doc["config"]["augment"] == "shift" and doc["config"]["noisy"]
    assert any("train/loss" in r for r in read_jsonl(runs_dir() / "a100k" / "metrics.jsonl"))


def test_a_run_from_before_a_setting_existed_resumes_as_it_was_made(capsys):
    # atari100k runs made before --dueling-hidden had a hidden layer per stream; the preset now says shared
    ok(capsys, "train", "dqn", "--env", "ALE/Breakout-v5", "--preset", "atari100k", "--dueling-hidden", "per-stream",
       "--steps", "250", "--learning-starts", "240", "--buffer-size", "1000", "--eval-episodes", "1",
       "--eval-exploration-eps", "1", "--video", "false", "--compile", "false", "--name", "older")
    config = runs_dir() / "older" / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    del doc["config"]["dueling_hidden"]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    ok(capsys, "resume", str(runs_dir() / "older"), "--steps", "260")  # the checkpoint fits the network built
    assert json.loads((runs_dir() / "older" / "summary.json").read_text())["global_step"] == 260


def test_lab_eval_plays_an_atari_run_under_the_protocol_asked_for(capsys):
    ok(capsys, "train", "dqn", "--env", "ALE/Breakout-v5", "--preset", "atari100k-drq", "--steps", "250",
       "--learning-starts", "240", "--buffer-size", "1000", "--eval-episodes", "1", "--eval-exploration-eps", "1",
       "--video", "false", "--compile", "false", "--name", "proto")
    run = runs_dir() / "proto"
    ok(capsys, "eval", str(run), "--episodes", "1")
    assert json.loads((run / "eval.json").read_text())["sticky_actions"] == 0.0  # the preset's, as it trained
    config = run / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    del doc["run"]["eval_sticky_actions"]  # a run made before the setting existed evaluated with 0.25
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    ok(capsys, "eval", str(run), "--episodes", "1")
    assert json.loads((run / "eval.json").read_text())["sticky_actions"] == 0.25
    ok(capsys, "eval", str(run), "--episodes", "1", "--eval-sticky-actions", "0")
    assert json.loads((run / "eval.json").read_text())["sticky_actions"] == 0.0
    one_line_error(capsys, ["eval", str(run), "--eval-sticky-actions", "1.5"], "--eval-sticky-actions must be between 0 and 1")
    ok(capsys, "train", "random", "--env", "CartPole-v1", "--steps", "50", "--eval-episodes", "1", "--name", "cp")
    one_line_error(capsys, ["eval", str(runs_dir() / "cp"), "--eval-sticky-actions", "0"],
                   "--eval-sticky-actions sets an Atari evaluation", "ran CartPole-v1")


def test_dqn_help_lists_the_new_flags(capsys):
    from lab.cli import main

    assert main(["train", "dqn", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--distributional", "--num-atoms", "--noisy", "--adam-eps", "--augment", "--preset", "atari100k-drq"):
        assert flag in out, flag
    assert "small subclass" in out and "docs/examples/munchausen_dqn.py" in out  # how to write a variant
    defaults = DQNConfig()  # dqn alone stays DQN
    assert (defaults.distributional, defaults.noisy, defaults.augment, defaults.adam_eps) == ("none", False, "none",
                                                                                              1e-8)


def test_cnn_rotation_trains_a_tiny_run(capsys):
    ok(capsys, "train", "cnn", "--data", "squares:96", "--plugins-dir", str(DOCS_EXAMPLES), "--steps", "6",
       "--rotation", "10", "--batch-size", "16", "--validation-size", "16", "--widths", "8", "--video", "false",
       "--name", "rot")
    doc = yaml.safe_load((runs_dir() / "rot" / "config.yaml").read_text())
    assert doc["config"]["rotation"] == 10.0
    assert "augment" in load_checkpoint(runs_dir() / "rot" / "checkpoints" / "latest.pt")["rng"]["streams"]
    assert any("train/loss" in r for r in read_jsonl(runs_dir() / "rot" / "metrics.jsonl"))


def test_the_guides_dqn_variant_trains(capsys):
    ok(capsys, "--plugins-dir", str(DOCS_EXAMPLES), "train", "m-dqn", "--env", "CartPole-v1", "--steps", "400",
       "--learning-starts", "200", "--batch-size", "32", "--train-freq", "4", "--gradient-steps", "1",
       "--eval-episodes", "2", "--video", "false", "--name", "mdqn")
    assert any("train/loss" in r for r in read_jsonl(runs_dir() / "mdqn" / "metrics.jsonl"))
