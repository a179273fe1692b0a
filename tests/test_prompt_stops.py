"""Bounded work on any input (issue 32): a budget a setting inflates is refused before any work."""

from __future__ import annotations

import pytest

from conftest import one_line_error, runs_dir
from lab.api import LabError
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
