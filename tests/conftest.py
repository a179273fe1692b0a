"""Shared fixtures: every test runs in its own runs dir with W&B off unless it asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
LOCAL_PLUGINS = TESTS / "local_plugins"


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
