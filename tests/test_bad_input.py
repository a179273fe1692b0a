"""Every user mistake: one line naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import LOCAL_PLUGINS, run_lab
from lab.cli import main


def check(capsys, argv, *expected):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["train", "tyo", "--data", "toy-data"], ("unknown algorithm 'tyo'", "did you mean: toy")),
    (["train", "toy", "--data", "toy-dat"], ("unknown dataset 'toy-dat'", "toy-data")),
    (["train", "toy", "--data", "toy-data", "--steps", "-5"], ("--steps must be >= 1",)),
    (["train", "toy", "--data", "toy-data", "--seed", "abc"], ("--seed expects an integer; got 'abc'",)),
    (["train", "toy", "--data", "toy-data", "--wandb", "sometimes"], ("--wandb must be one of",)),
    (["train", "toy", "--data", "toy-data", "--compile", "maybe"], ("--compile must be one of auto, true, false",)),
    (["train", "toy", "--data", "toy-data", "--lerning-rate", "1"], ("unknown flag --lerning-rate",
                                                                    "--learning-rate")),
    (["train", "toy", "--data", "toy-data", "--lr", "1"], ("unknown flag --lr", "did you mean: --learning-rate")),
    (["train", "toy", "--data", "toy-data", "--bs", "1"], ("unknown flag --bs", "did you mean: --batch-size")),
    (["train", "toy", "--data", "toy-data", "--learning-rate", "-1"], ("learning-rate must be positive",)),
    (["train", "toy", "--data", "toy-data", "--mode", "weird"], ("--mode must be one of plain, fancy",)),
    (["train", "toy", "--data", "toy-data", "--steps", "5", "--epochs", "1"], ("either --steps or --epochs",)),
    (["train", "toy", "--data", "toy-data", "--device", "cuda"], ("--device cuda",)),
    (["train", "toy"], ("pass --data NAME",)),
    (["train", "toy", "--data", "toy-data", "--config", "missing.yaml"], ("does not exist",)),
    (["resume", "nowhere"], ("run directory 'nowhere' does not exist", "lab runs")),
    (["eval", "nowhere"], ("does not exist",)),
    (["resume", "x", "--steps", "ten"], ("--steps expects a positive integer",)),
    (["frobnicate"], ("invalid choice",)),
])
def test_bad_input(toy_plugins, capsys, argv, expected):
    if "--device" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    check(capsys, argv, *expected)


@pytest.mark.parametrize("algo", ["dqn", "sb3-dqn", "sb3-ppo", "sb3-a2c"])
def test_a_negative_learning_rate_is_one_line(capsys, algo):
    check(capsys, ["train", algo, "--env", "CartPole-v1", "--learning-rate", "-1"], "learning-rate must be positive")
    assert not list(Path(os.environ["LAB_RUNS_DIR"]).glob("*"))


def test_broken_yaml_and_unknown_yaml_key(toy_plugins, capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text("batch_size: [1,\n")
    check(capsys, ["train", "toy", "--data", "toy-data", "--config", "bad.yaml"], "not valid YAML")
    (tmp_path / "typo.yaml").write_text("bach_size: 3\n")
    check(capsys, ["train", "toy", "--data", "toy-data", "--config", "typo.yaml"], "unknown setting 'bach_size'",
          "batch_size")


def test_duplicate_yaml_key(toy_plugins, capsys, tmp_path):
    (tmp_path / "dup.yaml").write_text("batch_size: 2\nseed: 1\nbatch_size: 3\n")
    check(capsys, ["train", "toy", "--data", "toy-data", "--config", "dup.yaml"],
          "config file 'dup.yaml' sets 'batch_size' twice (line 3)", "keep one")


def test_plugins_dir_after_the_subcommand(capsys):
    plugins = str(LOCAL_PLUGINS)
    assert main(["train", "toy", "--plugins-dir", plugins, "--data", "toy-data", "--steps", "3", "--name", "a"]) == 0
    assert main(["train", "toy", "--data", "toy-data", "--steps", "3", "--name", "b", f"--plugins-dir={plugins}"]) == 0
    run = Path(os.environ["LAB_RUNS_DIR"]) / "a"
    assert main(["resume", str(run), "--steps", "5", "--plugins-dir", plugins]) == 0
    capsys.readouterr()
    assert main(["plugins", "--json", "--plugins-dir", plugins]) == 0
    assert '"toy"' in capsys.readouterr().out
    check(capsys, ["plugins", "--plugins-dir"], "--plugins-dir needs a directory")
    check(capsys, ["plugins", "--plugins-dir", "--json"], "--plugins-dir needs a directory")


def test_compare_out_suffix_and_missing_metric(toy_plugins, capsys):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "3", "--name", "c"]) == 0
    run = str(Path(os.environ["LAB_RUNS_DIR"]) / "c")
    capsys.readouterr()
    check(capsys, ["compare", run, "--out", "curves.txt"], "--out 'curves.txt'", "'.txt'", ".png, .svg, .pdf")
    check(capsys, ["compare", run, "--out", "curves"], "no suffix")
    assert not Path("curves.txt").exists() and not Path("curves").exists()
    check(capsys, ["compare", run, "--metric", "not\nlogged"], "no run logged 'not\\nlogged'", "--metric")
    assert main(["compare", run, "--out", "CURVES.SVG"]) == 0 and Path("CURVES.SVG").is_file()


def test_existing_run_is_never_overwritten(toy_plugins, capsys):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "3", "--name", "keep"]) == 0
    run = Path(os.environ["LAB_RUNS_DIR"]) / "keep"
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    check(capsys, ["train", "toy", "--data", "toy-data", "--steps", "3", "--name", "keep"],
          "already exists", "lab resume")
    assert (run / "metrics.jsonl").read_text() == before


def test_corrupt_checkpoint_and_config(toy_plugins, capsys):
    assert main(["train", "toy", "--data", "toy-data", "--steps", "3", "--name", "c"]) == 0
    run = Path(os.environ["LAB_RUNS_DIR"]) / "c"
    (run / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    check(capsys, ["resume", str(run), "--steps", "6"], "corrupt", "latest.pt")
    (run / "checkpoints" / "latest.pt").unlink()
    check(capsys, ["resume", str(run), "--steps", "6"], "does not exist")
    (run / "config.yaml").write_text(": : :\n")
    check(capsys, ["resume", str(run)], "corrupt")


def test_corrupt_checkpoint_detail_is_cut_at_a_word(toy_plugins, capsys):
    import argparse
    import re

    import torch

    from lab.run.checkpoint import load_checkpoint
    from lab.errors import LabError

    assert main(["train", "toy", "--data", "toy-data", "--steps", "3", "--name", "w"]) == 0
    run = Path(os.environ["LAB_RUNS_DIR"]) / "w"
    latest = run / "checkpoints" / "latest.pt"
    torch.save({"algorithm": argparse.Namespace(), "global_step": 3}, latest)  # weights_only refuses the global
    capsys.readouterr()
    check(capsys, ["resume", str(run), "--steps", "6"], "corrupt or unreadable",
          "; restore it from a backup or use checkpoints/best.pt")
    with pytest.raises(Exception) as raw:  # torch's message: long, with terminal colour codes
        torch.load(latest, weights_only=True)
    words = set(re.sub(r"\x1b\[[0-9;]*m", "", str(raw.value)).split())
    with pytest.raises(LabError) as caught:
        load_checkpoint(latest)
    detail = re.search(r"corrupt or unreadable \((.*)\); restore", str(caught.value)).group(1)
    assert "\x1b" not in detail and set(detail.removesuffix(" ...").split()) <= words, detail


def test_runs_lists_broken_runs(toy_plugins, capsys):
    import shutil

    runs = Path(os.environ["LAB_RUNS_DIR"])
    assert main(["train", "toy", "--data", "toy-data", "--steps", "3", "--name", "good"]) == 0
    for name in ("badcfg", "badsum", "nosum"):
        shutil.copytree(runs / "good", runs / name)
    (runs / "badcfg" / "config.yaml").write_text(": : :\n")
    (runs / "badsum" / "summary.json").write_text('{"status": "fini')
    (runs / "nosum" / "summary.json").unlink()
    capsys.readouterr()
    assert main(["runs"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("│")}
    assert "finished" in rows["good"]
    assert "broken (config.yaml unreadable)" in rows["badcfg"]
    assert "broken (summary.json unreadable)" in rows["badsum"]
    assert "running" in rows["nosum"]


def test_failed_setup_leaves_no_half_made_run(toy_plugins, capsys):
    # a dataset error raised while the algorithm is built: the run directory made for it is removed
    check(capsys, ["train", "toy", "--data", "toy-data:nope", "--name", "gone", "--steps", "3"],
          "no variant 'nope'")
    assert not (Path(os.environ["LAB_RUNS_DIR"]) / "gone").exists()


def test_cli_subprocess_has_no_traceback():
    result = run_lab("--plugins-dir", str(LOCAL_PLUGINS), "train", "toy", "--data", "toy-data", "--steps", "-5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
