"""A new env family, tracker and command come from a plugin alone: lab/ is not touched.

The plugin (`tests/family_plugins/corridors.py`) registers an env family with its own
setting and reference scores, a tracker with its own setting, and a `lab` command.
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
