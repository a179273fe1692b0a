"""Shared fixtures: every test runs in its own runs dir with W&B off unless it asks for it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
import yaml

from lab.cli import main
from lab.plugins.datasets import MNIST_FILES

if TYPE_CHECKING:
    from throwaway_server import ThrowawayServer

TESTS = Path(__file__).parent
LOCAL_PLUGINS = TESTS / "local_plugins"
MNIST_NAMES = [name for name, _ in MNIST_FILES.values()]
# Resolved now, before the autouse fixture moves each test into its own tmp dir, so the
# README's relative `LAB_DATA_DIR=../shared/datasets` keeps pointing at the real files.
TIMING = ("time", "perf/sps", "perf/compile_s")  # the only values allowed to differ between two runs
DATA_DIR = Path(os.environ.get("LAB_DATA_DIR") or TESTS.resolve().parents[1] / "shared" / "datasets").resolve()
# Sweep parameters: a bayes search over the toy algorithm's learning rate (a trial takes a
# second; needs the `toy_plugins` fixture), and fixed settings of a short random-agent run.
BAYES = {"algo": {"value": "toy"}, "data": {"value": "toy-data"}, "steps": {"value": 40},
         "learning_rate": {"distribution": "log_uniform_values", "min": 0.001, "max": 1.0}}
RANDOM_FIXED = {"algo": {"value": "random"}, "env": {"value": "CartPole-v1"}, "steps": {"value": 200},
                "eval_episodes": {"value": 2}}


def real_data_dir() -> Path:
    """The folder holding the real mnist/ ($LAB_DATA_DIR, else ../shared/datasets); skips without it."""
    if not all((DATA_DIR / "mnist" / name).is_file() for name in MNIST_NAMES):
        pytest.skip(f"real MNIST not found in {DATA_DIR / 'mnist'}; set LAB_DATA_DIR to a folder with mnist/")
    return DATA_DIR


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` first, the rest in their usual order: under pytest-xdist the other
    workers fill in around the long end-to-end runs instead of waiting for one at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("LAB_PLUGINS_DIR", raising=False)
    monkeypatch.delenv("LAB_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))  # reference classifiers: never the user's
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A data dir of the test's own ($LAB_DATA_DIR), so a test can check that nothing is
    written beside the data. Modules that train generators use it for every test (`pytestmark`)."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("LAB_DATA_DIR", str(path))
    return path


@pytest.fixture
def toy_plugins(monkeypatch):
    monkeypatch.setenv("LAB_PLUGINS_DIR", str(LOCAL_PLUGINS))


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder made once a test session by `make(folder)`, whichever pytest-xdist worker asks
    first (the others wait for it), for session-scoped fixtures that share trained runs. Tests
    only read it: one that changes a run copies it first (shutil.copytree)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder = root / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.parent / f"{name}.done"
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # left half-made by a failed `make`
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def run_lab(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `lab` CLI in a subprocess (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def start_worker(spec: Path, *flags: str) -> subprocess.Popen:
    """`lab sweep SPEC FLAGS` in a subprocess, not waited for: a sweep worker (its stdout and stderr piped)."""
    return subprocess.Popen([sys.executable, "-m", "lab", "sweep", str(spec), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def start_workers(spec: Path, n: int, *flags: str, timeout: float = 600) -> list[tuple[str, str]]:
    """`n` sweep workers on one study, started at once (so they race, as on a cluster); their
    (stdout, stderr) once all have exited 0."""
    procs = [start_worker(spec, *flags) for _ in range(n)]
    outs = [proc.communicate(timeout=timeout) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outs]
    return outs


def write_spec(path: Path, **spec) -> Path:
    """A sweep spec file: `spec` as YAML."""
    path.write_text(yaml.safe_dump(spec))
    return path


def bayes_workers_share_a_study(server: ThrowawayServer, folder: Path, name: str, n: int) -> None:
    """`n` bayes workers (--count 2) started together on the server's fresh database: each runs its
    2 trials, no two alike, and the password is never shown (stderr says ***) nor kept in a run."""
    import optuna

    spec = write_spec(folder / f"{name}.yaml", method="bayes", metric={"name": "eval/accuracy", "goal": "maximize"},
                      parameters=BAYES)
    errs = [err for _, err in start_workers(spec, n, "--count", "2", "--storage", server.url)]
    trials = optuna.load_study(study_name=name, storage=server.sqlalchemy_url).get_trials()
    assert len(trials) == 2 * n and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.params["learning_rate"] for t in trials}) == 2 * n, "every parameter set is distinct"
    assert len({t.user_attrs["worker"] for t in trials}) == n
    assert sorted(p.name for p in runs_dir().iterdir() if p.name.startswith(f"{name}-")) == \
        [f"{name}-{i:03d}" for i in range(1, 2 * n + 1)]
    shown = server.url.replace(server.password, "***")
    assert all(f"study: {shown}" in err and server.password not in err for err in errs)
    for run in runs_dir().iterdir():  # no run folder holds the password
        for path in run.rglob("*"):
            assert not path.is_file() or server.password.encode() not in path.read_bytes(), path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def runs_dir() -> Path:
    return Path(os.environ["LAB_RUNS_DIR"])


def comparable(rows: list[dict]) -> list[dict]:
    """Metric rows without their timings: what an exact rerun or resume must reproduce."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def lab(capsys, *argv: str) -> tuple[int, str]:
    """Run `lab ARGV` in this process; (exit code, stderr)."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def ok(capsys, *argv: str) -> str:
    code, err = lab(capsys, *argv)
    assert code == 0, err
    return err


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    """Exit 2, exactly one `error:` line on stderr (warnings aside), no traceback."""
    code, err = lab(capsys, *argv)
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def read_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    picture = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert picture is not None, path
    return picture
