"""Shared fixtures: every test runs in its own runs dir with W&B off unless it asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.plugins.datasets import MNIST_FILES

TESTS = Path(__file__).parent
LOCAL_PLUGINS = TESTS / "local_plugins"
MNIST_NAMES = [name for name, _ in MNIST_FILES.values()]
# Resolved now, before the autouse fixture moves each test into its own tmp dir, so the
# README's relative `LAB_DATA_DIR=../shared/datasets` keeps pointing at the real files.
DATA_DIR = Path(os.environ.get("LAB_DATA_DIR") or TESTS.resolve().parents[1] / "shared" / "datasets").resolve()


def real_data_dir() -> Path:
    """The folder holding the real mnist/ ($LAB_DATA_DIR, else ../shared/datasets); skips without it."""
    if not all((DATA_DIR / "mnist" / name).is_file() for name in MNIST_NAMES):
        pytest.skip(f"real MNIST not found in {DATA_DIR / 'mnist'}; set LAB_DATA_DIR to a folder with mnist/")
    return DATA_DIR


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("LAB_PLUGINS_DIR", raising=False)
    monkeypatch.delenv("LAB_LOAD_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def toy_plugins(monkeypatch):
    monkeypatch.setenv("LAB_PLUGINS_DIR", str(LOCAL_PLUGINS))


def run_lab(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `lab` CLI in a subprocess (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
