"""Bounded work on any input, prompt stops (issue 32): a budget a setting inflates is refused
before any work, a buffer that cannot fit is refused before it is allocated, and a stop
signal is honoured within seconds wherever the loop is (inside a rollout, an evaluation),
ending `interrupted` with a checkpoint `lab resume` continues from."""

from __future__ import annotations

import pytest
import torch

from conftest import one_line_error, runs_dir
from lab.api import LabError
from lab.buffers import ReplayBuffer, RolloutBuffer
from lab.memory import allocating, size_text
from lab.plugins.ppo import PPO
from lab.run.entry import round_budget

# ------------------------------------------------------------------ budgets


def test_a_budget_the_step_multiple_inflates_is_refused_in_one_line_before_any_run_folder(capsys) -> None:
    line = one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "100000", "--steps", "2048"],
                          "--steps 2048 would be rounded up to 3,200,000 steps", "--n-steps 32 and --num-envs 100000",
                          "lower --n-steps or --num-envs", "--steps 3200000")
    assert "1,562x" in line
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_the_preset_budget_is_named_when_it_is_the_one_inflated(capsys) -> None:
    one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "100000"],
                   "the preset's budget of 100,000 steps would be rounded up to 3,200,000 steps")


def test_rounding_up_to_twice_the_budget_is_allowed_with_a_note(capsys) -> None:
    config = PPO.Config(n_steps=32, num_envs=8)  # 256 steps a rollout
    assert round_budget(PPO, config, 128) == 256  # 2x: at least half a rollout asked for
    assert "--steps 128 rounded up to 256" in capsys.readouterr().err
    with pytest.raises(LabError, match=r"--steps 127 would be rounded up to 256 steps \(2x\)"):
        round_budget(PPO, config, 127)


# ------------------------------------------------------------------ memory


def test_a_rollout_that_cannot_fit_is_refused_in_one_line_with_the_estimate_and_the_limit(capsys) -> None:
    # 1e12 steps of CartPole: 4 float32 of observation, an int64 action, 5 float32 and 3 flags a transition
    line = one_line_error(capsys, ["train", "ppo", "--env", "CartPole-v1", "--num-envs", "1",
                                   "--n-steps", "1000000000000", "--steps", "1000000000000"],
                          "a rollout of 1,000,000,000,000 steps x 1 envs needs 47 TB of CPU memory",
                          "can be used (80% of the", "free)", "lower --n-steps or --num-envs")
    assert not runs_dir().exists() or not any(runs_dir().iterdir())  # nothing of the run is left
    assert line


def test_a_replay_that_cannot_fit_is_refused_in_one_line_with_the_estimate_and_the_limit(capsys) -> None:
    one_line_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--buffer-size", "1000000000000"],
                   "a replay of 1,000,000,000,000 transitions needs", "TB of CPU memory", "can be used",
                   "lower --buffer-size")
    with pytest.raises(LabError, match=r"needs 40 TB of CPU memory, but .* can be used \(80% of the .* free\)"):
        ReplayBuffer(10**12, (4,), 1, "cpu", observation_dtype=torch.float32)


def test_an_allocation_that_fails_anyway_is_one_line_too(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] . DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 128000000000 bytes.")

    monkeypatch.setattr(torch, "zeros", refuse)
    with pytest.raises(LabError) as caught:
        RolloutBuffer(1000, 2, (4,), (), "cpu")
    assert "a rollout of 1,000 steps x 2 envs needs" in str(caught.value)
    assert "could not be allocated" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(RuntimeError, match="something else"), allocating("x", 1, "cpu", "fix"):
        raise RuntimeError("something else")  # only a failed allocation is reworded
    assert size_text(1.28e11) == "128 GB" and size_text(1536) == "1.54 KB"
