"""A file system that refuses a run's files is one line, and every way out of a half-made run
folder is the same one (issue 32: no traceback left).

The faults are real ones that hold for root too: a name longer than the file system takes,
a path through a regular file, a folder where a file belongs, /dev/full (a write that finds
no space), /proc and /sys (file systems that take no new files)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import lab, ok, one_line_error, runs_dir
from lab.api import LabError
from lab.atomic import atomic_write
from lab.cli import main
from lab.files import FileFault, fault, make_folder, name_max, writing

pytestmark = pytest.mark.usefixtures("toy_plugins")

TOY = ["train", "toy", "--data", "toy-data"]
LONG = "n" * 300  # over NAME_MAX (255 on every Linux file system the lab runs on)


def toy_run(capsys, name: str = "r", steps: int = 3) -> Path:
    ok(capsys, *TOY, "--steps", str(steps), "--name", name)
    return runs_dir() / name


def refused(call) -> str:
    """The FileFault `call` raises, as its one line."""
    with pytest.raises(FileFault) as caught:
        call()
    line = str(caught.value)
    assert "\n" not in line and line.startswith("cannot "), line
    return line


# -- the one place: lab.files turns each real fault into its line ---------------------------------------


def test_a_name_longer_than_the_file_system_takes(tmp_path):
    line = refused(lambda: atomic_write(tmp_path / LONG / "config.yaml", lambda h: h.write(b"x")))
    assert "(File name too long)" in line and "is 300 bytes" in line and f"at most {name_max(tmp_path)}" in line
    assert LONG not in line, "an over-long name is cut in the message"


def test_a_path_through_a_regular_file(tmp_path):
    (tmp_path / "plain").write_text("a file\n")
    line = refused(lambda: make_folder(tmp_path / "plain" / "run" / "checkpoints"))
    assert "(Not a directory): 'plain' in that path is a file, not a folder; move it away" in line


def test_a_file_where_a_folder_belongs_and_a_folder_where_a_file_belongs(tmp_path):
    (tmp_path / "media").write_text("not a folder\n")
    line = refused(lambda: make_folder(tmp_path / "media", "create the media folder"))
    assert line.startswith("cannot create the media folder") and "(File exists)" in line
    assert "(File exists): it is a file, not a folder; move it away" in line
    (tmp_path / "eval.json").mkdir()
    line = refused(lambda: atomic_write(tmp_path / "eval.json", lambda h: h.write(b"{}")))
    assert "(Is a directory): it is a folder, not a file; move it away" in line
    assert not list(tmp_path.glob(".eval.json.*.tmp")), "the temporary is removed"


def test_a_full_disk_in_a_plain_write_and_in_torch_save():
    with pytest.raises(FileFault) as caught, writing(Path("/dev/full"), "write metrics to"), \
            open("/dev/full", "w") as handle:
        handle.write("x" * 10_000)
        handle.flush()
    assert "(No space left on device): the disk is full; free space" in str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(FileFault) as caught, writing(Path("/dev/full"), "write checkpoint"), \
            open("/dev/full", "wb") as handle:
        torch.save({"weights": torch.zeros(100_000)}, handle)
    assert str(caught.value).startswith("cannot write checkpoint '/dev/full' (No space left on device)")


def test_file_systems_that_take_no_new_files():
    line = refused(lambda: make_folder(Path("/proc/lab-runs/x"), "create run folder", "choose another --runs-dir"))
    assert "(No such file or directory): '/proc/lab-runs' does not exist and cannot be made in '/proc'" in line
    assert line.endswith("choose another --runs-dir")
    line = refused(lambda: make_folder(Path("/sys/lab-runs")))
    assert any(reason in line for reason in ("(Operation not permitted)", "(Permission denied)",
                                             "(Read-only file system)")), line


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(ValueError, match="not a file-system error"), writing(tmp_path / "x"):
        raise ValueError("not a file-system error")
    with pytest.raises(RuntimeError, match="a bug"), writing(tmp_path / "x"):
        raise RuntimeError("a bug")
    assert fault(KeyError("k"), tmp_path) is None
    assert isinstance(fault(OSError(errno.EROFS, "Read-only file system"), tmp_path), LabError)


# -- each file the lab makes goes through it --------------------------------------------------------------


def test_a_run_name_longer_than_the_file_system_takes_is_refused_up_front(capsys):
    line = one_line_error(capsys, [*TOY, "--steps", "3", "--name", LONG], "--name is 300 bytes long",
                          f"at most {name_max(runs_dir())}", "choose a shorter --name")
    assert not runs_dir().exists() or not any(runs_dir().iterdir()), line


def test_a_run_folder_the_file_system_refuses_is_one_line(capsys, tmp_path):
    from lab.run.rundir import create_run_dir

    # a name made by the lab (a sweep's, a default one) rather than typed: the same line from mkdir
    line = refused(lambda: create_run_dir(tmp_path / "runs", LONG))
    assert line.startswith("cannot create run folder") and "(File name too long)" in line
    (tmp_path / "plain").write_text("a file\n")
    one_line_error(capsys, [*TOY, "--steps", "3", "--name", "x", "--runs-dir", str(tmp_path / "plain" / "runs")],
                   "cannot create run folder", "(Not a directory)", "'plain' in that path is a file, not a folder",
                   "choose another --runs-dir")
    one_line_error(capsys, [*TOY, "--steps", "3", "--name", "x", "--runs-dir", "/proc/lab-runs"],
                   "cannot create run folder '/proc/lab-runs/x'", "(No such file or directory)")


def test_a_run_name_that_is_a_file_is_one_line_and_the_file_is_kept(capsys):
    runs_dir().mkdir(parents=True)
    (runs_dir() / "notes").write_text("mine\n")
    one_line_error(capsys, [*TOY, "--steps", "3", "--name", "notes"],
                   f"'{runs_dir() / 'notes'}' is a file, not a run folder", "choose another --name")
    assert (runs_dir() / "notes").read_text() == "mine\n"


def test_a_lock_file_that_is_a_folder_is_one_line(capsys):
    run = toy_run(capsys)
    (run / ".lock").mkdir()
    one_line_error(capsys, ["resume", str(run), "--steps", "6"], f"cannot lock run '{run / '.lock'}'",
                   "(Is a directory)", "move it away")


def test_eval_json_and_summary_json_the_file_system_refuses(capsys):
    run = toy_run(capsys)
    (run / "eval.json").mkdir()
    one_line_error(capsys, ["eval", str(run)], f"cannot write '{run / 'eval.json'}'", "(Is a directory)")
    assert not (run / ".lock").exists(), "the lock is let go"
    # summary.json refused at the end of a run: the checkpoint holds the run, so a warning, not a failure
    (run / "summary.json").unlink()
    (run / "summary.json").mkdir()
    code, err = lab(capsys, "resume", str(run), "--steps", "6")
    assert code == 0, err
    assert f"warning: cannot write '{run / 'summary.json'}' (Is a directory)" in err and "Traceback" not in err


def test_metrics_jsonl_on_a_full_disk_is_one_line(tmp_path):
    from lab.plugins.jsonl_tracker import JsonlTracker

    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    tracker = JsonlTracker(tmp_path / "metrics.jsonl", start_time=0.0)
    line = refused(lambda: [tracker.log({"train/loss": 0.5}, step) for step in range(1000)])
    assert line.startswith(f"cannot write metrics to '{tmp_path / 'metrics.jsonl'}' (No space left on device)")
    tracker.finish({})
    (tmp_path / "plain").write_text("x\n")
    line = refused(lambda: JsonlTracker(tmp_path / "plain" / "metrics.jsonl", start_time=0.0))
    assert "(Not a directory)" in line


def test_replay_chunks_the_file_system_refuses_read_as_the_checkpoint():
    from lab.api.state import rows_state
    from lab.run.chunks import ChunkStore

    run = Path("run")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "replay").write_text("a file where the chunks go\n")
    store = ChunkStore(run / "checkpoints" / "replay")
    state = {"buffers": rows_state({"obs": torch.zeros(8, 2)}, steps=8, margin=0)}
    line = refused(lambda: store.spill(state))
    assert line.startswith("cannot write checkpoint 'run/checkpoints/replay/buffers.00000.at8.pt' (File exists)")
    assert "'replay' in that path is a file, not a folder" in line
    assert "it was the run's first, so nothing can resume the run" in line


def test_the_sweep_folder_the_file_system_refuses(tmp_path):
    from lab.experiments.storage import default_storage

    (tmp_path / "plain").write_text("x\n")
    line = refused(lambda: default_storage("s", tmp_path / "plain"))
    assert line.startswith("cannot create the sweep folder") and "(Not a directory)" in line


# -- lab compare --out and lab sample --out make no folders -----------------------------------------------


def test_compare_out_in_a_missing_folder_is_one_line_before_any_work(capsys):
    run = toy_run(capsys)
    one_line_error(capsys, ["compare", str(run), "--out", "a/b/c.png"], "--out 'a/b/c.png'",
                   "the folder 'a/b' does not exist", "mkdir -p a/b")
    assert not Path("a").exists(), "no folder is made"
    Path("plain").write_text("x\n")
    one_line_error(capsys, ["compare", str(run), "--out", "plain/c.png"], "'plain' is a file, not a folder",
                   "choose another --out")
    Path("plot.png").mkdir()
    one_line_error(capsys, ["compare", str(run), "--out", "plot.png"], "--out 'plot.png' is a folder",
                   "name the file to write")


def test_sample_out_goes_into_a_folder_that_exists(tmp_path):
    from lab.files import check_output

    with pytest.raises(LabError, match=r"--out 'x/y/grid.png': the folder 'x/y' does not exist"):
        check_output(Path("x/y/grid.png"), "--out")
    with pytest.raises(LabError, match=r"--out 'x/translated': the folder 'x' does not exist"):
        check_output(Path("x/translated"), "--out", folder=True)  # the output folder itself is made, not its parents
    check_output(tmp_path / "translated", "--out", folder=True)
    check_output(tmp_path / "grid.png", "--out")  # a folder that exists takes it (lab compare's plots too)
    check_output(tmp_path, "--out", folder=True)  # translated images may go into a folder that exists
    with pytest.raises(LabError, match=r"is a folder; name the file to write"):
        check_output(tmp_path, "--out")


# -- a run folder left without a checkpoint: one way on, from every command -------------------------------


def test_a_run_without_a_checkpoint_gets_one_way_forward_from_resume_train_and_runs(capsys):
    run = toy_run(capsys, "half")
    for checkpoint in (run / "checkpoints").iterdir():  # what a full disk or a kill before the first one leaves
        checkpoint.unlink()
    (run / "summary.json").unlink()
    way = f"delete it (`rm -r {run}`) and train it again, or train under another --name"
    resume = one_line_error(capsys, ["resume", str(run)], "holds no checkpoint", "nothing can resume it", way)
    train = one_line_error(capsys, [*TOY, "--steps", "3", "--name", "half"], "already exists", "holds no checkpoint",
                           way)
    assert "lab resume" not in resume + train, "neither points at the other"
    unwrapped = "".join(main_runs(capsys)["half"].split())  # where the table wrapped the path does not matter
    assert unwrapped.count(f"rm-r{run}") == 1
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file(), "nothing is deleted for the user"


def test_a_failed_first_checkpoint_points_the_same_way(capsys, tmp_path):
    from lab.run.checkpoint import save_checkpoint

    run = toy_run(capsys)
    (run / "checkpoints" / "best.pt").unlink()
    (run / "checkpoints" / "latest.pt").rename(run / "kept.pt")
    (run / "checkpoints" / "latest.pt").mkdir()  # a write the file system refuses
    line = refused(lambda: save_checkpoint({"global_step": 1}, run / "checkpoints" / "latest.pt"))
    assert "it was the run's first, so nothing can resume the run: once fixed, delete it" in line
    assert f"(`rm -r {run}`) and train it again, or train under another --name" in line
    (run / "checkpoints" / "latest.pt").rmdir()
    (run / "kept.pt").rename(run / "checkpoints" / "latest.pt")
    (run / "checkpoints" / "best.pt").mkdir()
    line = refused(lambda: save_checkpoint({"global_step": 1}, run / "checkpoints" / "best.pt"))
    assert f"the older checkpoints are kept: once fixed, `lab resume {run}` continues the run" in line


def main_runs(capsys) -> dict[str, str]:
    """`lab runs` as {name: its row}, each cell whole: a cell the table wraps over several lines
    (a long run path: pytest-xdist's tmp paths are longer) is joined back, a space at each wrap."""
    assert main(["runs"]) == 0
    rows: dict[str, list[str]] = {}
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells[0]:
            name, rows[cells[0]] = cells[0], cells
        else:  # a continuation line of the row above
            rows[name] = [f"{a} {b}".strip() for a, b in zip(rows[name], cells, strict=True)]
    return {name: " │ ".join(cells) for name, cells in rows.items()}


# -- a summary rebuilt after deletion names the key metric -------------------------------------------------


def test_a_rebuilt_summary_has_the_key_metric(capsys):
    run = toy_run(capsys)
    before = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    row = main_runs(capsys)["r"]
    rebuilt = json.loads((run / "summary.json").read_text())
    assert rebuilt["rebuilt"] and rebuilt["key_metric"] == "eval/accuracy" == before["key_metric"]
    assert rebuilt["eval/accuracy"] == before["eval/accuracy"] and rebuilt["best"] == before["best"]
    assert f"eval/accuracy {before['eval/accuracy']:.4g} ({before['best']:.4g})" in row


def test_a_summary_rebuilt_from_an_older_checkpoint_finds_the_key_metric_of_its_algorithm(capsys):
    run = toy_run(capsys)
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    del state["runner"]["key_metric"]  # as checkpoints written before the runner named it
    torch.save(state, run / "checkpoints" / "latest.pt")
    (run / "summary.json").unlink()
    assert "eval/accuracy" in main_runs(capsys)["r"]
    assert json.loads((run / "summary.json").read_text())["key_metric"] == "eval/accuracy"


# -- a corrupt or missing checkpoint: the advice names the run's other one ---------------------------------


def test_a_corrupt_best_pt_points_at_latest_pt(capsys):
    run = toy_run(capsys)
    (run / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    line = one_line_error(capsys, ["eval", str(run), "--checkpoint", "best"], "best.pt' is corrupt",
                          "restore it from a backup or use checkpoints/latest.pt (--checkpoint latest)")
    assert "use checkpoints/best.pt" not in line
    (run / "checkpoints" / "best.pt").unlink()
    one_line_error(capsys, ["eval", str(run), "--checkpoint", "best"], "best.pt' does not exist",
                   "use checkpoints/latest.pt (--checkpoint latest)")
    (run / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint")
    one_line_error(capsys, ["resume", str(run), "--steps", "6"], "latest.pt' is corrupt",
                   "restore it from a backup (the run has no other checkpoint)")


def test_the_file_system_limit_is_read_where_the_runs_go(tmp_path):
    assert name_max(tmp_path / "not" / "made" / "yet") == os.pathconf(tmp_path, "PC_NAME_MAX")
    assert name_max(Path("/proc/nope/deeper")) > 0
