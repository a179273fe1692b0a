"""arcade-lab: one runner, many plugins, for deep RL and generative models."""

import os

# Idle torch/OpenMP threads otherwise spin and starve the emulator threads of the Atari
# vector env (measured: 470 -> 177 env steps/s on 2 cores). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def load(run_dir, checkpoint: str = "best", device: str | None = None, plugins_dir: str | None = None):
    """The trained algorithm of a run directory, ready to use.

        agent = lab.load("runs/dqn-CartPole-v1-s1-...")   # checkpoints/best.pt
        actions = agent.act(observations)                # a torch batch, on agent.ctx.device

    `checkpoint` is "best" or "latest"; `device` overrides the run's ("cpu", "cuda");
    `plugins_dir` is needed only when the run used local plugins from a folder that has
    moved (the run records the one it used). Call `.close()` when done with an agent.
    """
    from pathlib import Path

    from lab.run.discovery import load_lab
    from lab.run.rundir import read_config
    from lab.run.runner import load as load_run

    run_dir = Path(run_dir)
    doc = read_config(run_dir)
    return load_run(load_lab(plugins_dir or doc.get("plugins_dir")), run_dir, checkpoint, device)
