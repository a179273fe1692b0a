"""A new env family, tracker and command come from a plugin alone: lab/ is not touched.

The plugin (`tests/family_plugins/corridors.py`) registers an env family with its own
setting and reference scores, a tracker with its own setting and sweep server, and a `lab`
command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import TESTS, ok, one_line_error, read_jsonl, runs_dir
from lab.cli import main

FAMILY_PLUGINS = TESTS / "family_plugins"


@pytest.fixture(autouse=True)
def family_plugins(monkeypatch):
    monkeypatch.setenv("LAB_PLUGINS_DIR", str(FAMILY_PLUGINS))


def test_an_env_family_brings_its_settings_presets_and_score_normalisation(capsys) -> None:
    ok(capsys, "train", "random", "--env", "Corridor/Long-v0", "--corridor-length", "3", "--steps", "20",
       "--eval-episodes", "2", "--video", "false", "--name", "c")
    made = [call for call in read_jsonl(Path("corridors-made.jsonl")) if call["env_id"] == "Corridor/Long-v0"]
    assert made and all(call["corridor_length"] == 3 for call in made), "every env made gets the family setting"
    assert {call["evaluation"] for call in made} == {False, True}
    doc = yaml.safe_load((runs_dir() / "c" / "config.yaml").read_text())
    assert doc["run"]["corridor_length"] == 3
    evals = [r for r in read_jsonl(runs_dir() / "c" / "metrics.jsonl") if "eval/return_mean" in r]
    assert evals and all(r["eval/normalized_score"] == pytest.approx(r["eval/return_mean"] / 2.0) for r in evals)


def test_a_family_setting_is_refused_for_other_envs(capsys) -> None:
    one_line_error(capsys, ["train", "random", "--env", "CartPole-v1", "--corridor-length", "3"],
                   "--corridor-length is a setting of corridor envs; --env CartPole-v1 takes no such setting")
    one_line_error(capsys, ["train", "random", "--env", "Corridor/Short-v0", "--corridor-length", "0"],
                   "--corridor-length must be >= 1")


def test_a_tracker_brings_its_own_setting(capsys) -> None:
    ok(capsys, "train", "random", "--env", "Corridor/Short-v0", "--steps", "20", "--video", "false",
       "--notes-prefix", "mine", "--trackers", "jsonl,notes", "--name", "n")
    notes = read_jsonl(runs_dir() / "n" / "notes.jsonl")
    assert notes and {line["prefix"] for line in notes} == {"mine"}
    assert yaml.safe_load((runs_dir() / "n" / "config.yaml").read_text())["run"]["notes_prefix"] == "mine"
    assert main(["train", "random", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--notes-prefix" in help_text and "--corridor-length" in help_text


def test_a_tracker_runs_sweeps_on_its_own_server(capsys, tmp_path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "corr", "method": "random", "metric": {"name": "eval/return_mean"},
                                    "parameters": {"algo": {"value": "random"}, "env": {"value": "Corridor/Short-v0"},
                                                   "steps": {"value": 20}, "seed": {"values": [1, 2]}}}))
    assert main(["sweep", str(spec), "--count", "2", "--notes-agent", "--notes-prefix", "p"]) == 0
    assert json.loads(Path("notes-sweep.json").read_text()) == {"name": "corr", "count": 2, "prefix": "p"}
    assert not runs_dir().exists(), "the tracker's server runs the trials, not the local sweep"
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    help_text = capsys.readouterr().out
    assert "--notes-agent" in help_text and "--wandb-agent" in help_text


def test_a_plugin_command_runs_and_is_listed(capsys) -> None:
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out.startswith("hello world, ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "say hello (plugin corridors)" in capsys.readouterr().out, "`lab --help` lists plugin commands"
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    (mine,) = [r for r in rows if r["name"] == "corridors"]
    assert {"name": "hello", "kind": "command"} in mine["registered"]
    assert {"name": "notes", "kind": "tracker"} in mine["registered"]


def test_the_core_imports_no_env_family_tracker_or_plugin() -> None:
    """lab/ knows envs, trackers and plugins only through the hooks: a new family or tracker needs no edit there."""
    import ast

    core = TESTS.parent / "lab"
    forbidden = {"lab.plugins", "lab.envs", "plugins", "envs", "wandb", "tensorboard", "torch.utils.tensorboard",
                 "ale_py", "envpool", "mujoco", "stable_baselines3"}
    found = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            found += [f"{path.relative_to(core)}: {name}" for name in names
                      if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert found == ["run/discovery.py: lab.plugins"], "only discovery names the built-ins' package (to list it)"
