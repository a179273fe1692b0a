"""Config: dataclass fields as flags, YAML, presets, precedence and validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pytest

from lab.api import Algorithm, LabError
from lab.run.discovery import load_lab
from lab.run.settings import convert, find_preset, load_yaml_file
from lab.run.settings import resolve as resolve_with

REGISTRY = load_lab().registry


def resolve(algo_cls, cli, file_values=None):
    return resolve_with(algo_cls, cli, file_values, REGISTRY)


@dataclass
class Cfg:
    learning_rate: float = 1e-3
    batch_size: int = 32
    hidden: tuple[int, ...] = (64, 64)
    double_q: bool = True
    target: int | None = None
    loss: Literal["mse", "huber"] = "huber"

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")


class Algo(Algorithm):
    name = "algo"
    kind = "agent"
    Config = Cfg
    presets: ClassVar[dict[str, dict[str, Any]]] = {"CartPole-v1": {"learning_rate": 0.01, "batch_size": 64, "steps": 5000}}

    def train_step(self):
        return {}

    def evaluate(self):
        return {}


def test_convert_types():
    assert convert("3e-4", float, "lr") == pytest.approx(3e-4)
    assert convert("1_000", int, "n") == 1000
    assert convert("1e6", int, "n") == 1_000_000
    assert convert("false", bool, "flag") is False
    assert convert("none", int | None, "t") is None
    assert convert("128,128", tuple[int, ...], "h") == (128, 128)
    assert convert([1, 2], tuple[int, ...], "h") == (1, 2)
    for value, tp in (("abc", int), ("1.5", int), ("maybe", bool), ("x", Literal["a", "b"])):
        with pytest.raises(LabError):
            convert(value, tp, "field")


def test_precedence_defaults_preset_file_cli():
    r = resolve(Algo, {}, {"env": "Acrobot-v1"})
    assert r.preset is None and r.algo.learning_rate == 1e-3
    r = resolve(Algo, {"env": "CartPole-v1"})
    # a preset's steps is its default budget, applied only when neither --steps nor --epochs is given
    assert r.preset == "CartPole-v1" and r.algo.batch_size == 64 and r.preset_steps == 5000 and r.run.steps is None
    r = resolve(Algo, {"env": "CartPole-v1", "batch_size": "16"}, {"batch_size": 8, "learning_rate": 0.5})
    assert r.algo.batch_size == 16 and r.algo.learning_rate == 0.5


def test_validation_errors_are_lab_errors():
    with pytest.raises(LabError, match="batch-size must be positive"):
        resolve(Algo, {"batch_size": "0"})
    with pytest.raises(LabError, match="steps must be >= 1"):
        resolve(Algo, {"steps": "-5"})
    with pytest.raises(LabError, match="seed expects an integer"):
        resolve(Algo, {"seed": "abc"})
    with pytest.raises(LabError, match="did you mean: learning_rate"):
        resolve(Algo, {}, {"learnin_rate": 1})


def test_yaml_file_flat_and_nested(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("learning-rate: 0.1\nseed: 3\n")
    assert load_yaml_file(flat) == {"learning_rate": 0.1, "seed": 3}
    nested = tmp_path / "nested.yaml"
    nested.write_text("algo: x\nrun: {seed: 4}\nconfig: {batch_size: 2}\nversions: {torch: '2'}\n")
    assert load_yaml_file(nested) == {"seed": 4, "batch_size": 2}
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(LabError, match="not valid YAML"):
        load_yaml_file(broken)
    with pytest.raises(LabError, match="does not exist"):
        load_yaml_file(tmp_path / "missing.yaml")


def test_presets_match_exact_ids_before_globs_in_order_then_the_family():
    presets = {"ALE/Pong-v5": {"a": 1}, "ALE/*-v5": {"a": 2}, "*-v5": {"a": 3}, "*NoFrameskip-v4": {"a": 4},
               "atari": {"a": 5}}
    assert find_preset(presets, "ALE/Pong-v5", "atari") == ("ALE/Pong-v5", {"a": 1})
    assert find_preset(presets, "ALE/Breakout-v5", "atari") == ("ALE/*-v5", {"a": 2})
    assert find_preset(presets, "Hopper-v5") == ("*-v5", {"a": 3})
    assert find_preset(presets, "PongNoFrameskip-v4", "atari")[0] == "*NoFrameskip-v4"
    assert find_preset({"atari": {"a": 5}}, "PongNoFrameskip-v4", "atari") == ("atari", {"a": 5})
    assert find_preset(presets, "CartPole-v1") == (None, {})


def test_dqn_presets_give_atari_its_own_settings_and_every_preset_a_budget():
    from lab.plugins.dqn import DQN

    atari = resolve(DQN, {"env": "ALE/Pong-v5"})
    assert atari.preset == "atari" and atari.algo.learning_starts == 100_000 and atari.preset_steps == 10_000_000
    assert resolve(DQN, {"env": "PongNoFrameskip-v4"}).algo.eval_exploration_eps == 0.05
    other = resolve(DQN, {"env": "CartPole-v0"})  # a discrete env without a preset: SB3's defaults
    assert other.preset is None and other.algo.learning_starts == 100 and other.preset_steps is None
    cartpole = resolve(DQN, {"env": "CartPole-v1"})
    assert cartpole.preset_steps == 50_000 and cartpole.algo.learning_starts == 1_000
    assert all("steps" in values for values in DQN.presets.values())


def test_train_help_shows_each_presets_values(capsys):
    from lab.cli import main

    assert main(["train", "dqn", "--help"]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1: steps=50000, learning_rate=0.0023" in out
    assert "atari: steps=10000000" in out
    assert "--frame-stack" in out and "atari env settings" in out, "the env family's settings are flags"


def test_env_family_settings_reach_the_factory_and_apply_to_their_family_only():
    atari = resolve(__import__("lab.plugins.dqn", fromlist=["DQN"]).DQN, {"env": "ALE/Pong-v5", "frame_stack": "2"})
    assert atari.env_options.frame_stack == 2 and atari.env_option_values()["frame_stack"] == 2
    assert atari.run_section()["frame_stack"] == 2, "config.yaml's run: records them"
    with pytest.raises(LabError, match="--frame-stack is a setting of atari envs; --env CartPole-v1 takes no such"):
        resolve(Algo, {"env": "CartPole-v1", "frame_stack": "2"})
    from lab.envs.backends import GymnasiumOptions

    cartpole = resolve(Algo, {"env": "CartPole-v1"})  # the gymnasium family's own settings
    assert cartpole.env_options == GymnasiumOptions() and cartpole.env_option_values() == {"env_backend": "auto"}
    with pytest.raises(LabError, match="--env-backend is a setting of gymnasium envs"):
        resolve(Algo, {"env": "ALE/Pong-v5", "env_backend": "envpool"})


def test_tracker_settings_are_run_settings_of_their_tracker():
    r = resolve(Algo, {"env": "CartPole-v1", "project": "mine", "wandb": "offline"})
    options = r.tracker_options["wandb"]
    assert (options.project, options.wandb, options.wandb_artifacts) == ("mine", "offline", False)
    assert r.run_section()["project"] == "mine" and not hasattr(r.run, "project"), "W&B's keys live with W&B"


def test_config_aliases_keep_old_names_working():
    from lab.plugins.sb3_agents import SB3PPOAgent

    r = resolve(SB3PPOAgent, {"env": "Pendulum-v1", "anneal": "true"})
    assert r.algo.anneal_lr and r.algo.anneal_clip_range
