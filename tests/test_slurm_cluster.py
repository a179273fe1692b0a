"""The local Slurm cluster of tests/slurm_cluster.py, for real: a job array runs every task, a
running job requeued with `scontrol requeue` runs again, and `stop()` leaves nothing running."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slurm_cluster import LocalSlurm, cluster_processes, slurm_binaries_missing, start_local_slurm

MISSING = slurm_binaries_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalSlurm]:
    cluster = start_local_slurm(tmp_path / "slurm")
    yield cluster
    cluster.stop()


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def job_field(cluster: LocalSlurm, job: str, name: str) -> str:
    """One KEY=VALUE field of `scontrol show job` (State is JobState)."""
    out = cluster.run("scontrol", "-o", "show", "job", job)
    return dict(item.split("=", 1) for item in out.split() if "=" in item)[name]


def test_job_array_requeue_and_stop(cluster: LocalSlurm, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()

    # A job array: every task runs, with its own SLURM_ARRAY_TASK_ID.
    cluster.run("sbatch", "--parsable", f"--chdir={work}", "--array=0-3",
                "--wrap", "echo $SLURM_ARRAY_TASK_ID > out.$SLURM_ARRAY_TASK_ID")
    outs = [work / f"out.{task}" for task in range(4)]
    wait_until(lambda: all(lines(out) for out in outs), "the 4 array tasks")
    assert [lines(out) for out in outs] == [["0"], ["1"], ["2"], ["3"]]

    # A running job requeued (as on preemption) runs again from the start. Slurm holds a requeued
    # job back until BeginTime = requeue + cred_expire + 1 s (6 s here): forcing it to start sooner
    # (`scontrol update starttime=now`) can race the old run's ending ("Job credential revoked").
    runs, pids = work / "runs", work / "pids"
    job = cluster.run("sbatch", "--parsable", f"--chdir={work}", "--wrap",
                      f"echo ${{SLURM_RESTART_COUNT:-0}} >> {runs}; echo $$ >> {pids}; exec sleep 300").strip()
    wait_until(lambda: lines(runs) == ["0"], "the job to run")
    cluster.run("scontrol", "requeue", job)
    wait_until(lambda: job_field(cluster, job, "JobState") == "PENDING", "the requeued job to be pending")
    assert job_field(cluster, job, "Reason") == "BeginTime"

    def started_again() -> bool:
        return lines(runs) == ["0", "1"]

    # (the limits below only bound a hang: on a loaded 2-core CI box slurmd takes seconds to start a step)
    wait_until(started_again, "the requeued job to run again", timeout=60)
    assert job_field(cluster, job, "JobState") == "RUNNING"
    assert job_field(cluster, job, "Restarts") == "1"

    # stop() cancels the job and ends every process of the cluster.
    cluster.stop()
    assert cluster_processes(cluster.folder) == []
    wait_until(lambda: not any(alive(int(pid)) for pid in lines(pids)), "the job's processes to end", timeout=30)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, left for PID 1 to reap, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

