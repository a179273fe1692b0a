"""--compile: the shared torch.compile service decides, falls back with a note, and keeps
compile time out of perf/sps."""

from __future__ import annotations

import typing

import pytest
import torch

import lab.run.compile
from conftest import ok, read_jsonl, runs_dir
from lab.api import Tracker
from lab.plugins.dqn import DQN, DQNConfig
from lab.run.compile import AUTO_MIN_CALLS, HotFunction
from lab.run.context import RunContext
from lab.run.discovery import load_lab
from lab.run.run_config import RunConfig
from lab.run.settings import convert

needs_compile = pytest.mark.skipif(lab.run.compile.unavailable_reason() is not None,
                                   reason=f"torch.compile cannot run here: {lab.run.compile.unavailable_reason()}")


def affine(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


def hot(setting: str, calls: int = AUTO_MIN_CALLS, pays_on_cpu: bool = False, device: str = "cpu",
        reports: list | None = None) -> HotFunction:
    return HotFunction(affine, name="affine", setting=setting, device=torch.device(device), calls=lambda: calls,
                       pays_on_cpu=pays_on_cpu, report=lambda name, s: (reports if reports is not None else []).append(s))


@pytest.mark.parametrize("setting, calls, pays_on_cpu, device, wanted", [
    ("false", 10**9, True, "cpu", False),
    ("true", 1, False, "cpu", True),
    ("auto", AUTO_MIN_CALLS, True, "cpu", True),
    ("auto", AUTO_MIN_CALLS - 1, True, "cpu", False),  # too short a run to repay the compile
    ("auto", 10**9, False, "cpu", False),  # measured not to pay on a CPU
    ("auto", AUTO_MIN_CALLS, False, "cuda", True),
])
def test_auto_compiles_where_it_pays_and_the_run_repays_it(setting, calls, pays_on_cpu, device, wanted):
    assert hot(setting, calls, pays_on_cpu, device).wanted() is wanted


@needs_compile
def test_a_compiled_function_gives_the_eager_result_and_reports_its_compile_time():
    reports: list[float] = []
    fn = hot("true", reports=reports)
    x = torch.arange(6.0)
    assert torch.equal(fn(x), affine(x)) and fn.compiled is True
    assert len(reports) == 1 and reports[0] > 0
    assert torch.equal(fn(x + 1), affine(x + 1)) and len(reports) == 1  # compiled once


def test_unavailable_compile_runs_eagerly_after_one_note(monkeypatch, capsys):
    monkeypatch.setattr(lab.run.compile, "unavailable_reason", lambda: "no C++ compiler on PATH")
    fn = hot("true")
    x = torch.arange(3.0)
    assert torch.equal(fn(x), affine(x)) and fn.compiled is False
    assert torch.equal(fn(x), affine(x))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "affine runs eagerly: no C++ compiler" in err


def test_a_failing_compile_runs_eagerly_after_one_note(monkeypatch, capsys):
    def broken(fn, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("inductor gave up\nlong details")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    fn = hot("true")
    x = torch.arange(3.0)
    assert torch.equal(fn(x), affine(x)) and fn.compiled is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torch.compile failed (RuntimeError: inductor gave up)" in err


def test_a_compile_stopped_by_ctrl_c_is_not_a_compile_failure(monkeypatch, capsys):
    import signal

    from lab.signals import STOP

    def interrupted(fn, **kwargs):
        def compiling(*args, **kw):  # Ctrl-C: the lab notes it; the compiler's worker processes die of it
            STOP.signum = signal.SIGINT
            raise RuntimeError("CppCompileError: C++ compile error\nworker exited")
        return compiling

    monkeypatch.setattr(torch, "compile", interrupted)
    monkeypatch.setattr(lab.run.compile, "unavailable_reason", lambda: None)
    fn = hot("true")
    x = torch.arange(3.0)
    try:
        assert torch.equal(fn(x), affine(x)), "the step still finishes, eagerly"
    finally:
        STOP.signum = None
    assert "torch.compile failed" not in capsys.readouterr().err
    assert fn.compiled is None, "nothing was decided: a resumed process compiles again"


def test_yaml_booleans_are_compile_settings():
    field_type = typing.get_type_hints(RunConfig)["compile"]
    assert convert(True, field_type, "compile") == "true"
    assert convert(False, field_type, "compile") == "false"


@needs_compile
def test_the_compiled_dqn_update_matches_the_eager_one(tmp_path):
    ctx = RunContext(device=torch.device("cpu"), seed=0, total_steps=1_000, run_dir=tmp_path,
                  registry=load_lab().registry, tracker=Tracker(), env_id="CartPole-v1", compile_setting="true")
    agent = DQN(DQNConfig(learning_starts=0, buffer_size=500, batch_size=32, net_arch=(32,), double_q=True), ctx)
    try:
        while len(agent.buffer) < 100:
            agent.train_step()
        batch = agent.buffer.sample(32)
        args = (batch.observations, batch.actions, batch.rewards, batch.discounts, batch.dones,
                batch.next_observations, batch.weights)
        eager_loss, eager_td = agent.td_loss(*args)
        loss, td = agent.compiled_td_loss(*args)
        assert agent.compiled_td_loss.compiled is True
        torch.testing.assert_close(loss, eager_loss)
        torch.testing.assert_close(td, eager_td)
    finally:
        agent.close()


@needs_compile
def test_lab_train_compile_true_logs_compile_time_apart_from_sps(capsys):
    err = ok(capsys, "train", "dqn", "--env", "CartPole-v1", "--steps", "600", "--learning-starts", "200",
             "--compile", "true", "--name", "compiled", "--video", "false", "--log-interval", "100",
             "--eval-interval", "600", "--eval-episodes", "1")
    assert "note: compiled the dqn update in" in err and "note: compiled the dqn acting pass in" in err
    rows = read_jsonl(runs_dir() / "compiled" / "metrics.jsonl")
    compile_rows = [row for row in rows if "perf/compile_s" in row]
    assert compile_rows and all(row["perf/compile_s"] > 0 for row in compile_rows)
    config = (runs_dir() / "compiled" / "config.yaml").read_text()
    assert "compile: 'true'" in config or 'compile: "true"' in config or "compile: true" in config
