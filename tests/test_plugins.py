"""Plugin discovery: built-ins, a pip-installed entry-point package, local files, failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LOCAL_PLUGINS, TESTS, run_lab
from conftest import lab as lab_cli
from lab.cli import main
from lab.run.discovery import load_lab


def lab_out(capsys, *argv: str) -> tuple[int, str]:
    """Run `lab ARGV` in this process; (exit code, stdout)."""
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_builtins_register_through_the_public_hooks():
    lab = load_lab()
    builtin = {p.name for p in lab.plugins if p.source == "builtin"}
    assert {"jsonl_tracker", "wandb_tracker"} <= builtin
    assert not lab.failures, lab.failures
    assert lab.registry.trackers["jsonl"].plugin == "jsonl_tracker"


def test_local_plugin_dir_and_listing(toy_plugins, capsys):
    code, out = lab_out(capsys, "plugins", "--json")
    assert code == 0, out
    rows = {row["name"]: row for row in json.loads(out)}
    toy = rows["toy"]
    assert toy["source"] == "local" and toy["version"] == "0.0.7"
    assert {"register_algorithms", "register_datasets", "register_trackers", "on_run_end"} <= set(toy["hooks"])
    assert {"name": "toy", "kind": "supervised"} in toy["registered"]
    assert {"name": "toy-data", "kind": "dataset"} in toy["registered"]
    code, table = lab_out(capsys, "--plugins-dir", str(LOCAL_PLUGINS), "plugins")
    assert code == 0 and "toy" in table


def test_broken_plugin_is_reported_and_others_load(capsys):
    lab = load_lab(TESTS / "broken_plugins")
    failed = {p.name: p.error for p in lab.failures}
    assert list(failed) == ["broken", "exits"] and "this_module_does_not_exist" in failed["broken"]
    assert failed["exits"] == "SystemExit: 3", "a plugin calling sys.exit at import is reported like one that raises"
    assert "fine-tracker" in lab.registry.trackers
    # the CLI in this process: a plugin that raises or calls sys.exit at import does not end it
    code, out = lab_out(capsys, "--plugins-dir", str(TESTS / "broken_plugins"), "plugins", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert "No module named" in rows["broken"]["error"] and "error" not in rows["fine"]
    # other commands warn on one line and carry on
    code, err = lab_cli(capsys, "--plugins-dir", str(TESTS / "broken_plugins"), "train", "nope")
    assert code == 2 and "warning: plugin 'broken' failed to load" in err
    assert "unknown algorithm 'nope'" in err and "Traceback" not in err


def test_lab_load_plugins_restricts_third_party(monkeypatch):
    monkeypatch.setenv("LAB_LOAD_PLUGINS", "fine")
    lab = load_lab(TESTS / "broken_plugins")
    names = {p.name for p in lab.plugins}
    assert "fine" in names and "broken" not in names and "jsonl_tracker" in names


@pytest.mark.slow
def test_entry_point_package_is_pip_installed_and_found(tmp_path):
    source = tmp_path / "example_plugin"
    shutil.copytree(TESTS / "example_plugin", source)  # building writes next to the sources
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    if install.returncode != 0 and "No module named 'setuptools'" in install.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    result = run_lab("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["example"]["source"] == "entrypoint" and rows["example"]["version"] == "1.2.3"
    assert {"name": "constant", "kind": "dataset"} in rows["example"]["registered"]
    # and the installed plugin's dataset and lifecycle hook work in a real run
    env["LAB_PLUGINS_DIR"] = str(LOCAL_PLUGINS)
    run = run_lab("train", "toy", "--data", "constant", "--steps", "4", "--name", "ep", env=env)
    assert run.returncode == 0, run.stderr
    assert (Path(os.environ["LAB_RUNS_DIR"]) / "ep" / "example_plugin_saw_start").read_text() == "ep"
    hidden = run_lab("plugins", "--json", env={**env, "LAB_LOAD_PLUGINS": ""})
    assert "example" not in {row["name"] for row in json.loads(hidden.stdout)}


def test_a_plugin_written_for_the_0_1_api_still_trains_and_its_run_loads(capsys):
    """tests/old_api_plugins/old_uniform.py imports every 0.1 module path (`lab.agent`,
    `lab.config`, `lab.hookspecs`, ...), which now alias `lab.api`: it registers, trains,
    and `lab.load` hands its run back as a policy that takes numpy."""
    import numpy as np

    import lab
    from conftest import ok, runs_dir

    old = TESTS / "old_api_plugins"
    loaded = load_lab(old)
    assert not loaded.failures, [(p.name, p.error) for p in loaded.failures]
    ok(capsys, "--plugins-dir", str(old), "train", "old-uniform", "--env", "CartPole-v1", "--steps", "40",
       "--eval-episodes", "1", "--video", "false", "--name", "old")
    policy = lab.load(runs_dir() / "old", plugins_dir=str(old))
    try:
        action = policy.act(np.zeros(4, dtype=np.float32))
        assert isinstance(action, np.ndarray) and action.shape == () and 0 <= int(action) < 2
    finally:
        policy.close()


def test_the_cli_and_the_light_half_of_the_plugin_api_load_without_torch():
    """`lab` installs its Ctrl-C handler before the heavy imports (a Ctrl-C during them must
    not become a traceback) and answers `--help` at once: importing the CLI, the settings
    and the plugin API's errors and config helpers loads neither torch nor gymnasium."""
    probe = ("import sys; import lab.cli, lab.run.settings; from lab.api import LabError, option; "
             "print(sorted(m for m in ('torch', 'gymnasium') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
