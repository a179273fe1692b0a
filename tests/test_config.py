"""Config: dataclass fields as flags, YAML, presets, precedence and validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from lab.algorithm import Algorithm
from lab.config import convert, load_yaml_file, resolve
from lab.errors import LabError


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
    presets = {"CartPole-v1": {"learning_rate": 0.01, "batch_size": 64, "steps": 5000}}

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
    assert r.preset == "CartPole-v1" and r.algo.batch_size == 64 and r.run.steps == 5000
    r = resolve(Algo, {"env": "CartPole-v1", "batch_size": "16"}, {"batch_size": 8, "learning_rate": 0.5})
    assert r.algo.batch_size == 16 and r.algo.learning_rate == 0.5


def test_validation_errors_are_lab_errors():
    with pytest.raises(LabError, match="batch-size must be positive"):
        resolve(Algo, {"batch_size": "0"})
    with pytest.raises(LabError, match="steps must be a positive"):
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
