"""`--launcher slurm`: the workers of a sweep, or the runs of `--seeds`, as a Slurm job array.

Submitted through submitit (the engine Meta's and Hydra's launchers use): each array task
runs one ordinary `lab` command in a child process (`LabCommand`), on whichever node Slurm
gives it, writing ordinary run folders to the shared runs dir:

- `lab sweep SPEC --launcher slurm --workers 8`: eight `lab sweep SPEC` workers on one study;
- `lab train ALGO ... --seeds 1-10 --launcher slurm`: one task per seed, `lab train ... --seeds S`.

Preemption, a time limit (Slurm's SIGUSR2 some seconds before it, `--signal=USR2@90`) and
`scontrol requeue` (SIGTERM) reach every process of the task: the lab command saves a
checkpoint and stops within seconds (`lab.signals`), and the requeued task runs the same
command again, which continues: a seed's run resumes, a worker resumes the trial it left
(`lab.experiments.study`). Nothing is lost and nothing runs twice.

A storage password never goes into the job folder (submitit pickles each task there): the
command holds the URL without it, and the task inherits `LAB_STORAGE_PASSWORD` from the
submitting shell's environment (sbatch's `--export=ALL`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.api import LabError

LAUNCHERS = ("local", "slurm")
# `lab train --seeds ... --launcher slurm` options, and the `lab sweep` flags of the same names
SLURM_FLAGS = ("--launcher", "--workers", "--partition", "--time", "--gpus-per-worker", "--cpus-per-worker", "--mem",
               "--slurm-folder")


@dataclass
class SlurmOptions:
    """What each array task asks Slurm for."""

    partition: str | None = None
    time: str = "4:00:00"
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    mem: str | None = None
    folder: Path | None = None  # submitit's logs and task pickles (default: RUNS/NAME.slurm)

    @property
    def timeout_min(self) -> int:
        return time_minutes(self.time)


def time_minutes(text: str) -> int:
    """Slurm's time formats (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH[:MM[:SS]]`) as whole minutes (at least 1)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise LabError(f"--time '{text}' is not a Slurm time; write HH:MM:SS, MM or D-HH:MM (e.g. 4:00:00)")
    days, a, b, c = (int(x) if x else None for x in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        minutes = days * 1440 + (a or 0) * 60 + (b or 0) + (1 if c else 0)
    elif c is not None:  # HH:MM:SS
        minutes = (a or 0) * 60 + (b or 0) + (1 if c else 0)
    elif b is not None:  # MM:SS
        minutes = (a or 0) + (1 if b else 0)
    else:
        minutes = a or 0
    if minutes < 1:
        raise LabError(f"--time '{text}' is under a minute; give the tasks at least 1 minute")
    return minutes


class LabCommand:
    """One array task: `python -m lab ARGS` in a child process, its exit code the task's result.

    submitit calls `checkpoint` on Slurm's SIGUSR2 (a time limit or a preemption coming): the
    signal reached the child too, which saves and stops; the same command is then requeued.
    SIGTERM (scontrol requeue, scancel) also reaches the child; submitit ignores it itself."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self._proc: subprocess.Popen[Any] | None = None

    def __call__(self) -> int:
        self._proc = subprocess.Popen([sys.executable, "-m", "lab", *self.args])
        while True:
            try:
                return self._proc.wait()
            except KeyboardInterrupt:  # a signal submitit turned into one: the child has it too
                continue

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        if self._proc is not None and not _ended(self._proc.pid, seconds=0):
            self._proc.send_signal(signal.SIGTERM)  # (harmless if Slurm's signal already reached it)
            if not _ended(self._proc.pid, seconds=60):
                self._proc.kill()
        return DelayedSubmission(LabCommand(self.args), *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self.args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.args, self._proc = state["args"], None


def _ended(pid: int, seconds: float) -> bool:
    """Whether child `pid` ends within `seconds`, without reaping it. `checkpoint` runs in the
    signal handler that interrupted `__call__`'s `Popen.wait`, which holds the Popen's lock until
    it reaps the child: a second wait on the Popen would spin on that lock for its whole timeout."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def check_slurm() -> None:
    """`--launcher slurm` needs Slurm's commands here (and submitit); one line if not."""
    missing = [tool for tool in ("sbatch", "squeue", "scontrol") if shutil.which(tool) is None]
    if missing:
        raise LabError(f"--launcher slurm needs Slurm's {', '.join(missing)} on PATH (run it on a cluster's login "
                       "node), or drop --launcher to run here")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise LabError("--launcher slurm needs submitit; pip install submitit (or pip install 'arcade-lab[cluster]')") \
            from None


def submit(commands: list[list[str]], name: str, options: SlurmOptions, folder: Path) -> str:
    """One array task per command; returns the array's job id."""
    import submitit

    check_slurm()
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=100)
    params: dict[str, Any] = dict(job_name=name, time=options.timeout_min, cpus_per_task=options.cpus_per_worker,
                                  ntasks_per_node=1, nodes=1, signal_delay_s=90, array_parallelism=len(commands))
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_worker:
        params["gpus_per_node"] = options.gpus_per_worker
    if options.mem:
        params["mem"] = options.mem
    executor.update_parameters(**params)
    try:
        with executor.batch():
            jobs = [executor.submit(LabCommand(command)) for command in commands]
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise LabError(f"sbatch refused the job array ({lines[-1][:300] if lines else type(exc).__name__}); "
                       "check --partition, --time, --gpus-per-worker and --mem against `sinfo`") from None
    return str(jobs[0].job_id).split("_")[0]
