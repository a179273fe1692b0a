"""arcade-lab: one runner, many plugins, for deep RL and generative models."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runner loads torch: imported where it is used, after OMP_WAIT_POLICY is set
    from lab.api import Algorithm
    from lab.run.entry import Run
    from lab.run.policy import AgentPolicy

# Idle torch/OpenMP threads otherwise spin and starve the emulator threads of the Atari
# vector env (measured: 470 -> 177 env steps/s on 2 cores). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def load(run_dir: str | os.PathLike[str], checkpoint: str = "best", device: str | None = None,
         plugins_dir: str | None = None) -> Algorithm | AgentPolicy:
    """The trained algorithm of a run directory, ready to use.

        agent = lab.load("runs/dqn-CartPole-v1-s1-...")   # checkpoints/best.pt
        action = agent.act(observation)                  # numpy or torch, one or a batch
        images = lab.load("runs/vae-mnist-s1-...").sample(16)

    An agent comes as a `lab.run.policy.AgentPolicy` (`act`, and SB3's `predict`), which
    converts what you hold (numpy, one observation, any device) for the agent; everything
    else is the algorithm's own (`evaluate()`, `global_step`, its networks).

    `checkpoint` is "best" or "latest"; `device` overrides the run's ("cpu", "cuda");
    `plugins_dir` is a folder of one-file plugins to load (as `--plugins-dir`), for a run
    whose algorithm came from one. Your random state and thread count stay as they were.
    Call `.close()` when done with an agent.
    """
    from pathlib import Path

    from lab.run.discovery import load_lab
    from lab.run.entry import load as load_run

    return load_run(load_lab(plugins_dir), Path(run_dir), checkpoint, device)


def train(algo: str, *, config: str | None = None, plugins_dir: str | None = None, **settings: Any) -> Run | None:
    """Train `algo` as `lab train ALGO` does, from a notebook or a script; returns the run.

        run = lab.train("ppo", env="CartPole-v1", steps=50_000, learning_rate=1e-3)
        run.status, run.summary["best"], run.dir       # finished | interrupted | failed
        agent = run.load()                            # = lab.load(run.dir)

    `settings` are the flags' fields (`--learning-rate` is `learning_rate`); `config` a
    settings file (as `--config`). The run directory is the one the CLI makes; Ctrl-C
    finishes the step, saves a checkpoint and returns the run `interrupted` (`lab resume`
    continues it). A bad setting raises `lab.api.LabError` with the CLI's one-line
    message. Returns None when Ctrl-C came before training started (no run is left).
    """
    from lab.run.discovery import load_lab
    from lab.run.entry import train_in_process
    from lab.run.settings import load_yaml_file

    return train_in_process(load_lab(plugins_dir), algo, settings, load_yaml_file(config) if config else None)
