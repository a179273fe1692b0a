"""The plugin guide's examples (docs/examples/) run as the guide says, and the guide shows them as they are.

docs/plugins.md pastes each example file after a `<!-- example: docs/examples/NAME.py -->`
line; these tests load the folder as a plugin folder (`--plugins-dir`) and train each
example for a few steps through the CLI, on data the examples make themselves.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from conftest import ok, one_line_error, read_jsonl, read_png, runs_dir
from lab.cli import main
from lab.envcheck import check_env_factory
from lab.run.discovery import load_lab

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = DOCS / "examples"
GUIDE = DOCS / "plugins.md"
PLUGINS = ("--plugins-dir", str(EXAMPLES))
SMALL_DATA = ("--data", "squares:400", "--validation-size", "100")


def shown_examples() -> dict[str, str]:
    """{file name: the code block the guide shows after its `<!-- example: ... -->` marker}."""
    pattern = re.compile(r"<!-- example: docs/examples/(\S+) -->\s*\n```python\n(.*?)```\n", re.DOTALL)
    return {name: code for name, code in pattern.findall(GUIDE.read_text(encoding="utf-8"))}


def train(capsys, name: str, *argv: str, media: bool = False) -> Path:
    """`lab train ARGV --name NAME` with the examples loaded; the run's folder."""
    ok(capsys, *PLUGINS, "train", *argv, "--name", name, "--video", str(media).lower())
    return runs_dir() / name


def test_the_guide_shows_every_example_file_as_it_is():
    shown = shown_examples()
    files = sorted(path.name for path in EXAMPLES.glob("*.py"))
    assert sorted(shown) == files
    for name in files:
        assert shown[name] == (EXAMPLES / name).read_text(encoding="utf-8"), f"docs/plugins.md shows an old {name}"


def test_every_example_loads_and_registers_its_names():
    loaded = load_lab(EXAMPLES)
    assert not loaded.failures, [(p.name, p.error) for p in loaded.failures]
    registry = loaded.registry
    assert {"uniform", "svm", "pixels", "redq", "huber-pg"} <= set(registry.algorithms)
    assert "squares" in registry.datasets and "Corridor-v0" in registry.envs
    assert "csv" in registry.trackers and "last" in registry.commands


def test_agent_example_trains_evaluates_and_keeps_best(capsys):
    run = train(capsys, "uniform", "uniform", "--env", "CartPole-v1", "--steps", "200", "--eval-episodes", "2")
    rows = read_jsonl(run / "metrics.jsonl")
    assert any("eval/return_mean" in row for row in rows) and rows[-1]["global_step"] == 200
    assert (run / "checkpoints" / "best.pt").is_file()
    one_line_error(capsys, [*PLUGINS, "train", "uniform", "--env", "CartPole-v1", "--num-envs", "0"], "--num-envs")


def test_the_loss_written_agent_trains_as_a_population(capsys):
    ok(capsys, *PLUGINS, "train", "huber-pg", "--env", "CartPole-v1", "--steps", "512", "--num-envs", "2",
       "--n-steps", "64", "--eval-episodes", "1", "--video", "false", "--seeds", "1-2", "--vectorize", "--name", "hpg")
    for seed in (1, 2):
        rows = read_jsonl(runs_dir() / f"hpg-s{seed}" / "metrics.jsonl")
        assert rows[-1]["global_step"] == 512 and any("train/value_loss" in row for row in rows)


def test_dataset_and_supervised_examples_train_by_epochs_and_keep_best(capsys):
    run = train(capsys, "svm", "svm", *SMALL_DATA, "--epochs", "2", "--batch-size", "50")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 2 * (300 // 50)  # steps_per_epoch
    assert summary["key_metric"] == "val/accuracy" and (run / "checkpoints" / "best.pt").is_file()
    evaluations = [row for row in read_jsonl(run / "metrics.jsonl") if "eval/accuracy" in row]
    assert evaluations and evaluations[-1]["eval/accuracy"] > 0.9  # four quadrants: linearly separable
    one_line_error(capsys, [*PLUGINS, "train", "svm", "--data", "squares:many"], "squares:N")
    one_line_error(capsys, [*PLUGINS, "train", "svm", "--data", "squares:50"], "--validation-size")


def test_generator_example_trains_writes_grids_and_samples(capsys):
    run = train(capsys, "pixels", "pixels", *SMALL_DATA, "--epochs", "1", media=True)
    assert (run / "checkpoints" / "best.pt").is_file()
    assert sorted((run / "media").glob("samples-step*.png"))
    ok(capsys, *PLUGINS, "sample", str(run), "--n", "16", "--out", "grid.png")
    assert read_png(Path("grid.png")).shape[:2] == (2 + 4 * 18, 2 + 4 * 18)  # 4x4 images of 16 px, 2 px gaps


def test_env_family_example_keeps_the_contract_and_adds_its_setting(capsys):
    check_env_factory(load_lab(EXAMPLES).registry.env_factory("Corridor-v0"), "Corridor-v0")
    run = train(capsys, "corridor", "random", "--env", "Corridor-v0", "--corridor-length", "3", "--steps", "200",
                "--eval-episodes", "2", media=True)  # the end-of-run video: render() works
    assert any("eval/normalized_score" in row for row in read_jsonl(run / "metrics.jsonl"))
    assert sorted((run / "media").glob("*.mp4"))
    config = (run / "config.yaml").read_text()
    assert "corridor_length: 3" in config
    one_line_error(capsys, [*PLUGINS, "train", "random", "--env", "CartPole-v1", "--corridor-length", "3"],
                   "--corridor-length")


def test_tracker_example_writes_every_scalar_and_checks_its_setting(capsys):
    run = train(capsys, "tracked", "uniform", "--env", "CartPole-v1", "--steps", "100", "--eval-episodes", "2",
                "--csv-file", "curves.csv")
    with (run / "curves.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    logged = {(row["global_step"], key) for row in read_jsonl(run / "metrics.jsonl") for key in row
              if key not in ("global_step", "time")}
    assert {(int(step), key) for step, key in logged} == {(int(row["step"]), row["metric"]) for row in rows}
    left_out = train(capsys, "untracked", "uniform", "--env", "CartPole-v1", "--steps", "20", "--trackers", "jsonl")
    assert not list(left_out.glob("*.csv"))
    one_line_error(capsys, [*PLUGINS, "train", "uniform", "--env", "CartPole-v1", "--csv-file", "../x.csv"],
                   "--csv-file")


def test_command_example_prints_the_last_value_and_is_listed(capsys):
    run = train(capsys, "measured", "svm", *SMALL_DATA, "--epochs", "1")
    assert main([*PLUGINS, "last", str(run)]) == 0
    assert capsys.readouterr().out.startswith("val/accuracy = ")
    assert main([*PLUGINS, "last", str(run), "train/loss"]) == 0
    assert capsys.readouterr().out.startswith("train/loss = ")
    one_line_error(capsys, [*PLUGINS, "last", str(run), "eval/nothing"], "logged no eval/nothing")
    with pytest.raises(SystemExit) as exit_:
        main([*PLUGINS, "--help"])
    assert exit_.value.code == 0 and "the last logged value of a run's metric" in capsys.readouterr().out


def test_the_off_policy_example_is_sac_with_an_ensemble_and_resumes(capsys):
    run = train(capsys, "redq", "redq", "--env", "Pendulum-v1", "--steps", "300", "--learning-starts", "200",
                "--net-arch", "16", "--batch-size", "16", "--critics", "4", "--gradient-steps", "2",
                "--eval-episodes", "1")
    state = __import__("torch").load(run / "checkpoints" / "latest.pt", weights_only=True)["algorithm"]
    assert state["critic"]["weights.0"].shape[0] == 4, "four critics in one batched network"
    assert state["updates"] == 2 * 100, "two gradient steps per env step after learning starts"
    assert any("train/critic_loss" in r for r in read_jsonl(run / "metrics.jsonl"))
    one_line_error(capsys, [*PLUGINS, "train", "redq", "--env", "Pendulum-v1", "--subset", "5", "--critics", "4"],
                   "--subset 5 must not exceed --critics 4")
