"""Every registered env factory keeps the VecEnv contract (`lab.envcheck`), plugins' included;
any gymnasium id trains through the CLI."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from conftest import LOCAL_PLUGINS
from lab.api import LabError, TrainingEnv
from lab.cli import main
from lab.envcheck import EnvContractError, check_env_factory, check_steps
from lab.envs.atari import atari_ids
from lab.run.discovery import load_lab

# what each glob registration is checked with (Box2D and MuJoCo come with the CI's extras)
REPRESENTATIVES = {
    "ALE/*-v5": ["ALE/Breakout-v5"],
    "*NoFrameskip-v4": ["PongNoFrameskip-v4"],
    "*": ["LunarLander-v3", "BipedalWalker-v3", "MountainCarContinuous-v0", "Hopper-v5", "HalfCheetah-v5"],
}


def registered_cases() -> list[tuple[str, str]]:
    atari_ids()  # registers the ALE ids with gymnasium
    cases = []
    for pattern in load_lab(LOCAL_PLUGINS).registry.envs:
        if not any(ch in pattern for ch in "*?["):
            cases.append((pattern, pattern))
            continue
        ids = REPRESENTATIVES.get(pattern) or [next(i for i in gym.registry if fnmatch.fnmatchcase(i, pattern))]
        cases += [(pattern, env_id) for env_id in ids]
    return cases


@pytest.mark.parametrize("pattern, env_id", registered_cases())
def test_every_registered_factory_keeps_the_contract(pattern, env_id):
    factory = load_lab(LOCAL_PLUGINS).registry.env_factory(env_id)
    check_env_factory(factory, env_id, steps=300)


def test_the_plugin_env_is_among_the_checked():
    assert ("ToyCorridor-v0", "ToyCorridor-v0") in registered_cases()


class DoneOnAutoreset:
    """Breaks the contract: reports a done on the step after a done."""

    num_envs, device = 1, torch.device("cpu")
    single_observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    single_action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None):
        return torch.zeros(1, 2)

    def step(self, actions):
        return torch.zeros(1, 2), torch.zeros(1), torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool), {}


def test_the_check_catches_a_done_on_an_autoreset_step():
    with pytest.raises(EnvContractError, match="done on an autoreset step"):
        check_steps(DoneOnAutoreset(), 3)


@pytest.mark.parametrize("env_id, steps", [("LunarLander-v3", 96), ("BipedalWalker-v3", 96),
                                           ("MountainCarContinuous-v0", 96), ("Hopper-v5", 96),
                                           ("Walker2d-v5", 96), ("HalfCheetah-v5", 96)])
def test_any_gymnasium_id_trains_through_the_cli(env_id, steps):
    assert main(["train", "random", "--env", env_id, "--steps", str(steps), "--num-envs", "2",
                 "--eval-episodes", "1", "--video", "false", "--name", "any"]) == 0
    summary = json.loads((Path(os.environ["LAB_RUNS_DIR"]) / "any" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == steps
    assert summary["eval/return_mean"] is not None


def test_mujoco_renders_an_evaluation_video_headless():
    try:
        frame = gym.make("Hopper-v5", render_mode="rgb_array")
        os.environ.setdefault("MUJOCO_GL", "egl")
        frame.reset(seed=0)
        frame.render()
        frame.close()
    except Exception as exc:  # no EGL/OSMesa on this machine
        pytest.skip(f"MuJoCo cannot render here ({type(exc).__name__}: {exc}); install EGL (libegl1) for videos")
    assert main(["train", "random", "--env", "Hopper-v5", "--steps", "20", "--eval-episodes", "1", "--name", "vid"]) == 0
    media = list((Path(os.environ["LAB_RUNS_DIR"]) / "vid" / "media").glob("*.mp4"))
    assert len(media) == 1 and media[0].stat().st_size > 1000


def test_an_env_without_saved_state_restarts_from_a_seed_of_the_step():
    factory = load_lab(LOCAL_PLUGINS).registry.env_factory("ToyCorridor-v0")
    env = TrainingEnv(factory("ToyCorridor-v0", num_envs=2), lambda step: 1000 + step)
    env.reset()
    state = env.state_dict()
    assert state["env"] is None  # the toy env has no state_dict
    env.load_state_dict(state, step=40)
    assert env.restarted


def test_unknown_gymnasium_ids_fail_with_close_matches(capsys):
    assert main(["train", "random", "--env", "LunarLandr-v3", "--steps", "10"]) == 2
    err = capsys.readouterr().err
    assert "unknown env 'LunarLandr-v3'" in err and "LunarLander-v3" in err
    assert not list(Path(os.environ["LAB_RUNS_DIR"]).glob("*"))  # no half-made run left behind
    with pytest.raises(LabError, match="did you mean"):
        load_lab().registry.env_factory("Hoper-v5")("Hoper-v5")


def test_asynchronous_envs_keep_the_contract_and_restart_on_resume():
    from lab.envs.gymnasium_env import make_gymnasium

    check_env_factory(lambda env_id, **kw: make_gymnasium(env_id, asynchronous=not kw["evaluation"], **kw),
                      "Pendulum-v1", steps=250)
    env = make_gymnasium("CartPole-v1", num_envs=2, asynchronous=True)
    try:
        env.reset()
        assert env.state_dict() is None  # the sub-envs live in other processes
    finally:
        env.close()
