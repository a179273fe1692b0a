"""bench/gpu_suite.py: known to work before a GPU sees it (its quick CPU run), and no host
syncs in the DQN step where CUDA exists."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import DATA_DIR

SUITE = Path(__file__).resolve().parents[1] / "bench" / "gpu_suite.py"
CASES = ("dqn_breakout", "ppo_breakout_8", "ppo_breakout_64", "ppo_breakout_256", "sac_halfcheetah", "ppo_population",
         "dqn_population", "replay_sampling", "data_buffer", "cnn_mnist", "compile", "host_syncs")


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_names_the_offline_steps():
    done = subprocess.run([sys.executable, str(SUITE), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert "--prepare" in done.stdout and "--install" in done.stdout and "--quick" in done.stdout


@pytest.mark.slow
def test_quick_cpu_run_gives_every_case_a_result_or_a_skip(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "LAB_DATA_DIR": str(DATA_DIR)}
    start = time.perf_counter()
    # no limit per case: the test checks that every case's code runs, and a busy CI box (other
    # tests' processes on both cores) once stretched the SAC case past its 30 s quick limit
    done = subprocess.run([sys.executable, str(SUITE), "--device", "cpu", "--quick", "--no-limits", "--budget-s", "280",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env, check=False)
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["device"] == "cpu"
    assert report["machine"]["cores"] >= 1 and report["wall_s"] <= wall
    assert set(report["cases"]) == set(CASES)
    for name, case in report["cases"].items():
        assert "error" not in case, f"{name}: {case['error']}\n{case.get('traceback', '')}"
        if "skipped" in case:
            assert case["skipped"].startswith("skipped:")
            continue
        figures = case["result"]["figures"]
        assert figures, name
        for key, value in figures.items():
            assert isinstance(value, (int, float)) and value > 0, (name, key, value)
    assert report["cases"]["host_syncs"]["skipped"] == \
        "skipped: needs CUDA (torch.cuda.set_sync_debug_mode; the DQN, PPO and SAC steps ran)"
    modes = report["cases"]["compile"]["result"]["modes"]
    assert modes["reduce_overhead"] == "skipped: needs CUDA" and "ms_per_update" in modes["eager"]
    assert not str(modes["default"]).startswith("error"), modes["default"]  # timed, or skipped without a compiler


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="host syncs are counted with torch.cuda.set_sync_debug_mode: needs CUDA")
def test_dqn_steps_make_no_host_sync_beyond_the_allowance():
    """The gradient step makes none; outside the env (which must hand actions to a host-side
    emulator) the step makes at most DQN_SYNC_ALLOWANCE (none)."""
    suite = load_suite()
    with suite.SyncCounter(detect=True) as counter:  # the counter sees a sync at all
        torch.zeros(1, device="cuda").item()
    assert counter.total >= 1
    counts = suite.dqn_syncs("cuda", quick=True)
    assert counts["gradient_steps"] > 0
    assert counts["per_gradient_step"] == 0, counts
    assert counts["outside_env_per_step"] <= suite.DQN_SYNC_ALLOWANCE, counts
