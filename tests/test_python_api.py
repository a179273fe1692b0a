"""Python entry points: `lab.train` (notebooks, scripts) and what `lab.load(...).act` takes."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import numpy as np
import pytest
import torch

import lab
from conftest import LOCAL_PLUGINS, runs_dir
from lab.api import LabError


def test_lab_train_makes_the_cli_run_directory_and_returns_the_run() -> None:
    run = lab.train("random", env="CartPole-v1", steps=200, eval_episodes=2, video=False, name="py")
    assert run.dir == runs_dir() / "py" and run.exit_code == 0 and run.status == "finished"
    assert (run.dir / "config.yaml").is_file() and (run.dir / "checkpoints" / "best.pt").is_file()
    assert run.summary["global_step"] == 200
    with pytest.raises(LabError, match="already exists"):
        lab.train("random", env="CartPole-v1", steps=200, name="py")
    with pytest.raises(LabError, match="--num-envs must be >= 1"):
        lab.train("random", env="CartPole-v1", num_envs=0)


def test_lab_train_stops_at_ctrl_c_as_the_cli_does_and_gives_python_its_handler_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    metrics = runs_dir() / "stopped" / "metrics.jsonl"
    done = threading.Event()

    def interrupt_once_training() -> None:  # Ctrl-C once the first metric row is written
        while not done.is_set():
            if metrics.is_file() and metrics.stat().st_size:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=interrupt_once_training)
    thread.start()
    try:
        run = lab.train("toy", data="toy-data", steps=10_000, sleep=0.01, log_interval=5, name="stopped",
                        plugins_dir=str(LOCAL_PLUGINS))
    finally:
        done.set()
        thread.join()
    assert run.status == "interrupted" and run.exit_code == 130
    assert 0 < run.summary["global_step"] < 10_000 and (run.dir / "checkpoints" / "latest.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("algo", ["dqn", "ppo"])
def test_act_takes_numpy_or_torch_one_observation_or_a_batch(algo: str) -> None:
    run = lab.train(algo, env="CartPole-v1", steps=256, eval_episodes=1, video=False, name=algo, **(
        {"learning_starts": 10} if algo == "dqn" else {"n_steps": 32}))
    state = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    agent = run.load()
    assert random.getstate() == state[0] and (np.random.get_state()[1] == state[1]).all() \
        and torch.equal(torch.get_rng_state(), state[2]), "lab.load leaves the caller's random state alone"
    try:
        one = agent.act(np.zeros(4, dtype=np.float64))
        assert isinstance(one, np.ndarray) and one.shape == () and int(one) in (0, 1)
        batch = agent.act(np.zeros((3, 4)))
        assert isinstance(batch, np.ndarray) and batch.shape == (3,)
        tensor = agent.act(torch.zeros(4))
        assert isinstance(tensor, torch.Tensor) and tensor.shape == ()
        assert agent.act(torch.zeros(5, 4)).shape == (5,)
        with pytest.raises(ValueError, match=r"one observation of shape \(4,\) or a batch"):
            agent.act(np.zeros((2, 2, 4)))
    finally:
        agent.close()


def test_an_agents_own_act_gets_exactly_what_it_is_given(tmp_path) -> None:
    """The plugin contract is one thing: `Agent.act` takes a batch of tensors on the run's
    device, with no hidden wrapper deciding by shape whether it is one observation; the
    conversion for users is `lab.load`'s policy (`AgentPolicy`) alone."""
    from dataclasses import dataclass

    from lab.api import Agent, Tracker
    from lab.run.context import RunContext
    from lab.run.discovery import load_lab
    from lab.run.policy import AgentPolicy

    seen: list[torch.Tensor] = []

    @dataclass
    class NoSettings:
        pass

    class Recorder(Agent):
        name, Config = "recorder", NoSettings

        def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
            seen.append(obs)
            return torch.zeros(len(obs), dtype=torch.long)

        def train_step(self) -> dict[str, float]:
            raise AssertionError("not trained here")

    ctx = RunContext(device=torch.device("cpu"), seed=0, total_steps=1, run_dir=tmp_path,
                     registry=load_lab().registry, tracker=Tracker(), env_id="CartPole-v1")
    agent = Recorder(NoSettings(), ctx)
    four_one_dim_observations = torch.zeros(4)  # the shape of one CartPole observation
    assert agent.act(four_one_dim_observations).shape == (4,)
    assert seen[-1] is four_one_dim_observations
    assert AgentPolicy(agent).act(np.zeros(4)).shape == ()  # a user's one observation
    assert seen[-1].shape == (1, 4) and seen[-1].dtype == torch.float32
