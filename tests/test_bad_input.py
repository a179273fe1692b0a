"""Every user mistake: one line naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import json
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
    return lines[0]


def one_error(capsys, argv, *expected):
    """Exit 2 and one `error:` line, no traceback, whatever else a run printed before it failed."""
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


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
    (["train", "toy", "--data", "toy-data", "--learning-rate", "-1e-3"], ("learning-rate must be positive, got -0.001",)),
    (["train", "toy", "--data", "toy-data", "--learning-rate", "-.5"], ("learning-rate must be positive, got -0.5",)),
    (["train", "random", "--env", "CartPole-v1", "--data", "toy-data"], ("random is an agent", "leave it out")),
    (["train", "toy", "--data", "toy-data", "--env", "CartPole-v1"], ("--env is for agents",)),
    (["resume", "x", "--wandbb", "offline"], ("unknown flag --wandbb for lab resume", "--wandb")),
    (["runs", "--wandb", "x"], ("unrecognized arguments",)),
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

    from lab.api import LabError
    from lab.run.checkpoint import load_checkpoint

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
    assert "finished" in rows["nosum"], "a lost summary.json is rebuilt from metrics.jsonl and the checkpoint"
    rebuilt = json.loads((runs / "nosum" / "summary.json").read_text())
    good = json.loads((runs / "good" / "summary.json").read_text())
    assert rebuilt["rebuilt"] and rebuilt["global_step"] == good["global_step"] and rebuilt["best"] == good["best"]
    assert rebuilt["eval/accuracy"] == good["eval/accuracy"]


def test_failed_setup_leaves_no_half_made_run(toy_plugins, capsys):
    # a dataset error raised while the algorithm is built: the run directory made for it is removed
    check(capsys, ["train", "toy", "--data", "toy-data:nope", "--name", "gone", "--steps", "3"],
          "no variant 'nope'")
    assert not (Path(os.environ["LAB_RUNS_DIR"]) / "gone").exists()


def test_cli_subprocess_has_no_traceback():
    result = run_lab("--plugins-dir", str(LOCAL_PLUGINS), "train", "toy", "--data", "toy-data", "--steps", "-5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


# -- run folders that were edited, cut, filled up or left half-made: one line each, nothing lost ----------


def _toy_run(capsys, name: str = "good", steps: int = 12) -> Path:
    assert main(["--plugins-dir", str(LOCAL_PLUGINS), "train", "toy", "--data", "toy-data", "--steps", str(steps),
                 "--name", name]) == 0
    capsys.readouterr()
    return Path(os.environ["LAB_RUNS_DIR"]) / name


def test_a_checkpoint_of_another_algorithm_or_an_edited_setting_is_one_line(capsys):
    import torch
    import yaml

    assert main(["train", "dqn", "--env", "CartPole-v1", "--steps", "300", "--learning-starts", "100",
                 "--net-arch", "16", "--name", "q"]) == 0
    capsys.readouterr()
    run = Path(os.environ["LAB_RUNS_DIR"]) / "q"
    doc = yaml.safe_load((run / "config.yaml").read_text())
    doc["config"]["net_arch"] = [8]
    (run / "config.yaml").write_text(yaml.safe_dump(doc))
    check(capsys, ["resume", str(run), "--steps", "400"], "does not fit dqn", "size mismatch", "net_arch")
    doc["config"]["net_arch"] = [16]
    (run / "config.yaml").write_text(yaml.safe_dump(doc))
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    state["algo"] = "ppo"
    torch.save(state, run / "checkpoints" / "latest.pt")
    check(capsys, ["resume", str(run), "--steps", "400"], "the checkpoint was written by ppo", "says dqn")
    check(capsys, ["eval", str(run), "--checkpoint", "latest"], "written by ppo")


def test_unreadable_metrics_lines_are_skipped_and_counted(capsys):
    run = _toy_run(capsys)
    lines = (run / "metrics.jsonl").read_bytes().splitlines()
    lines[1] = b'{"global_step": 3, "train/loss": 0.5, "bad": "\xff"}'
    lines.insert(2, b'{"global_step": "three", "train/loss": 0.5}')
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert main(["compare", str(run), "--metric", "train/loss", "--out", "c.png"]) == 0
    assert "note: skipped 2 unreadable lines of" in capsys.readouterr().err
    assert main(["--plugins-dir", str(LOCAL_PLUGINS), "resume", str(run), "--steps", "24"]) == 0
    assert "skipped 2 unreadable lines" in capsys.readouterr().err


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_older_checkpoint(capsys, monkeypatch):
    import errno

    import lab.atomic as atomic
    from lab.run.checkpoint import load_checkpoint

    run = _toy_run(capsys, steps=12)
    before = load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"]
    real_fsync = atomic.os.fsync

    def fsync(fd: int) -> None:  # the disk fills up: every file bigger than a summary fails to reach it
        if os.fstat(fd).st_size > 2000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    line = one_error(capsys, ["--plugins-dir", str(LOCAL_PLUGINS), "resume", str(run), "--steps", "24"],
                     "cannot write checkpoint", "No space left on device", "the older checkpoints are kept")
    assert "lab resume" in line
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["global_step"] == before
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert not list((run / "checkpoints").glob(".*.tmp")), "no temporary is left behind"


def test_resume_on_a_read_only_folder_is_one_line(capsys, monkeypatch):
    import errno

    import lab.run.rundir as rundir

    run = _toy_run(capsys)

    def read_only_open(path, *args, **kwargs):
        if str(path).endswith(".lock") and args and "a" in args[0]:
            raise OSError(errno.EROFS, "Read-only file system")
        return open(path, *args, **kwargs)

    monkeypatch.setattr(rundir, "open", read_only_open, raising=False)
    check(capsys, ["--plugins-dir", str(LOCAL_PLUGINS), "resume", str(run), "--steps", "24"],
          "cannot lock run", "Read-only file system", "writable")


def test_a_killed_writers_temporaries_are_removed_by_the_next_process(capsys):
    run = _toy_run(capsys)
    stale = run / "checkpoints" / ".latest.pt.k1ll3d.tmp"
    stale.write_bytes(b"\0" * 3_000_000)
    assert main(["--plugins-dir", str(LOCAL_PLUGINS), "resume", str(run), "--steps", "24"]) == 0
    assert not stale.exists()
    assert "removed 1 temporary file (3.0 MB) left by a process killed while writing" in capsys.readouterr().err


def test_a_folder_holding_only_a_dead_lock_is_taken_by_lab_train(capsys):
    folder = Path(os.environ["LAB_RUNS_DIR"]) / "half"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / ".lock").write_text("pid 99999999 on elsewhere (`lab train` since 2026-01-01 00:00:00)\n")
    check(capsys, ["resume", str(folder)], "not a run directory (no config.yaml)")
    assert main(["--plugins-dir", str(LOCAL_PLUGINS), "train", "toy", "--data", "toy-data", "--steps", "3",
                 "--name", "half"]) == 0
    assert "holds only the lock of a process killed as it started; taking it" in capsys.readouterr().err
    assert (folder / "config.yaml").is_file()


def test_resume_takes_the_trackers_settings(capsys, monkeypatch):
    import yaml

    monkeypatch.delenv("WANDB_MODE")
    run = _toy_run(capsys)  # W&B disabled through WANDB_MODE while it trained
    assert main(["--plugins-dir", str(LOCAL_PLUGINS), "resume", str(run), "--steps", "24", "--wandb", "offline",
                 "--trackers", "jsonl,wandb"]) == 0
    assert "W&B is offline: upload later" in capsys.readouterr().err
    assert list((run / "wandb").glob("offline-run-*")), "this session went to W&B"
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["wandb"] == "offline"
