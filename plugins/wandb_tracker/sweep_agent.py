"""`lab sweep SPEC --wandb-agent`: the same sweep spec on W&B's sweep server, an agent here."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from lab.api import LabError
from lab.experiments.sweep import Sweep


def wandb_config(sweep: Sweep) -> dict[str, Any]:
    """The spec for W&B's server: agents run `python -m lab train --algo=... --flag=value ...`."""
    config = {k: v for k, v in sweep.spec.items() if k != "command"}
    config["command"] = ["${env}", "${interpreter}", "-m", "lab", "train", "${args}"]
    config.setdefault("name", sweep.name)
    return config


def run_wandb_agent(sweep: Sweep, count: int | None, project: str) -> int:
    """Create the sweep on W&B's server and run an agent here (`wandb sweep` + `wandb agent`)."""
    import wandb

    try:
        sweep_id = wandb.sweep(wandb_config(sweep), project=project)
    except Exception as exc:  # offline, not logged in, no network
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LabError(f"W&B could not create the sweep ({reason}); W&B sweeps need `wandb login` and a network; "
                       "run `lab sweep SPEC` without --wandb-agent to search locally") from None
    if not sweep_id:
        raise LabError("W&B did not create the sweep (offline or not logged in); `wandb login` first, "
                       "or run `lab sweep SPEC` without --wandb-agent to search locally")
    command = [sys.executable, "-m", "wandb", "agent", *(["--count", str(count)] if count else []),
               f"{project}/{sweep_id}"]
    return subprocess.call(command)
