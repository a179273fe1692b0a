"""A real single-node Slurm cluster on localhost, started by a test for a Slurm launcher.

Each `start_local_slurm(folder)` is a cluster of its own: its own munged (own key and socket),
slurmctld and slurmd, with the slurm.conf, state and logs under `folder` (the unix sockets in a
short /tmp/slurm-XXXXXXXX, see `_sockets_folder`) and two free TCP ports chosen at start, so
pytest-xdist workers can each start one side by side.
Commands reach it through `LocalSlurm.env`: SLURM_CONF, and PATH (os.environ's at start) with a
stand-in `sacct` first (see `_write_sacct`); add it to the environment of every subprocess.

Why its own munged rather than the host's: the host's one (socket /run/munge) may not run
(no init system in CI), needs the munge user and /etc/munge/munge.key, and is shared, so
`stop()` could not stop it. Ours runs as root with `--force`, because the munge user cannot
enter the 0700 folder of the sockets; Slurm finds its socket through `AuthInfo=socket=...`.

Tested with Debian bookworm's slurm-wlm 22.05.8 and munge 0.5.15, as root (slurmd must be
root to start jobs, so `slurm_binaries_missing` also reports a non-root user).
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "munge", "slurmctld", "slurmd", "slurmstepd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
START_TIMEOUT_S = 30.0
# The shortest Slurm accepts (smaller values are refused and 120 s is used). It is also how long
# a requeued job waits before it may start again (BeginTime = requeue + cred_expire + 1 s).
CRED_EXPIRE_S = 5
# The node's name, not the host's: slurmd names its unix sockets <spool>/<node>_<job>.<step> and a
# long CI hostname in pytest's deep tmp folders would pass the 108 bytes a socket path may have.
NODE = "local"


def slurm_binaries_missing() -> str | None:
    """Why a local cluster cannot start here (a missing binary, or not root), None when it can."""
    missing = [name for name in BINARIES if shutil.which(name, path=_search_path()) is None]
    if missing:
        return f"Slurm not installed (missing: {', '.join(missing)}; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd starts the jobs)"
    return None


@dataclass
class LocalSlurm:
    """A running local cluster: `env` for the subprocesses that use it, `stop()` to end it."""

    folder: Path
    conf: Path
    node: str
    env: dict[str, str]  # to add to os.environ of every Slurm command (sbatch, submitit, ...)
    _daemons: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """A Slurm command on this cluster (e.g. `run("squeue", "-h")`); its stdout."""
        result = subprocess.run(
            args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def job_ids(self) -> list[str]:
        """The ids of the jobs still known to slurmctld and not finished."""
        out = self.run("squeue", "-h", "-o", "%i", "-t", "PD,R,CG,CF,S,RQ,RS,RH,RF,SE,SO,ST", check=False)
        return out.split()

    def stop(self, timeout: float = 15.0) -> None:
        """Cancels the jobs, stops slurmd, slurmctld and munged (in that order, each waited for),
        then kills any process still started by this cluster (a stuck slurmstepd)."""
        if len(self._daemons) >= 2 and self._daemons[1].poll() is None:  # slurmctld runs
            with contextlib.suppress(Exception):
                self.run("scancel", "--user", getpass.getuser(), check=False, timeout=10)
                _wait_for(lambda: not self.job_ids(), timeout)
        for daemon in reversed(self._daemons):  # slurmd, slurmctld, munged
            if daemon.poll() is None:
                daemon.terminate()
                try:
                    daemon.wait(timeout)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(5)
        self._daemons.clear()
        for pid in cluster_processes(self.folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        sockets = self.folder / "sockets"
        if sockets.is_symlink():
            shutil.rmtree(sockets.resolve(), ignore_errors=True)


def start_local_slurm(folder: Path, attempts: int = 3) -> LocalSlurm:
    """Writes folder/slurm.conf, starts munged, slurmctld and slurmd on it, and returns once
    the node is idle. Retries with new ports when one was taken between choosing and binding."""
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            return _start(folder / f"try{attempt}" if attempt else folder)
        except PortTaken as taken:
            error = taken
    raise RuntimeError(f"no free ports for Slurm after {attempts} tries") from error


class PortTaken(RuntimeError):
    """A daemon's port was taken by another process before it could bind it."""


# The marker in the daemons' environment (and so their slurmstepds') that finds them again.
MARKER = "LAB_LOCAL_SLURM"


def cluster_processes(folder: Path) -> list[int]:
    """The live (not zombie) processes started by the cluster in `folder`, found by the marker in
    their environment: munged, slurmctld, slurmd and the slurmstepds slurmd double-forks."""
    needle = f"{MARKER}={folder.resolve()}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie no longer runs: its reaper (PID 1) may never collect it
            pids.append(int(proc.name))
    return pids


def _start(folder: Path) -> LocalSlurm:
    folder = folder.resolve()
    (folder / "state").mkdir(parents=True, exist_ok=True)
    node = NODE
    conf = folder / "slurm.conf"
    sockets = _sockets_folder(folder)
    conf.write_text(_slurm_conf(folder, sockets, node, *_free_ports(2)))
    daemon_env = {**os.environ, "SLURM_CONF": str(conf), MARKER: str(folder)}
    path = os.pathsep.join([str(_write_sacct(folder)), os.environ.get("PATH", os.defpath)])
    cluster = LocalSlurm(folder=folder, conf=conf, node=node, env={"SLURM_CONF": str(conf), "PATH": path})
    try:
        _start_munged(folder, daemon_env, cluster._daemons)
        cluster._daemons.append(_daemon([_which("slurmctld"), "-D", "-i"], folder / "slurmctld.out", daemon_env))
        _wait_or_raise(lambda: _responds(cluster, "scontrol", "ping"), "slurmctld to answer", folder)
        cluster._daemons.append(_daemon([_which("slurmd"), "-D", "-N", node], folder / "slurmd.out", daemon_env))
        _wait_or_raise(lambda: _node_state(cluster) == "idle", f"node {node} to be idle (sinfo)", folder)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _sockets_folder(folder: Path) -> Path:
    """A short folder for the unix sockets: munged's and those of slurmd's spool (<node>_<job>.<step>).
    A socket's path has at most 107 bytes, less than pytest's tmp folders under xdist leave, so
    they go to /tmp/slurm-XXXXXXXX (mode 0700; removed by stop()), linked as folder/sockets."""
    sockets = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp" if os.path.isdir("/tmp") else None))
    (folder / "sockets").unlink(missing_ok=True)
    (folder / "sockets").symlink_to(sockets)
    return sockets


def _slurm_conf(folder: Path, sockets: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    """The configuration: everything under `folder` but the sockets, no cgroups (proctrack/linuxproc,
    task/none, no accounting), and short intervals so jobs start within a second of being able to."""
    cpus = len(os.sched_getaffinity(0))
    return f"""\
# Written by tests/slurm_cluster.py: a throwaway single-node cluster.
ClusterName=labtest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser={getpass.getuser()}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sockets}/munge.socket,cred_expire={CRED_EXPIRE_S}
StateSaveLocation={folder}/state
SlurmdSpoolDir={sockets}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
PlugStackConfig={folder}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# the node as written here even when the hardware seen by slurmd differs (containers)
SlurmdParameters=config_overrides
NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _write_sacct(folder: Path) -> Path:
    """folder/bin/sacct, answering from squeue the one query submitit makes to follow its jobs
    (`sacct -o JobID,State,NodeList --parsable2 -j ID ...`): this cluster keeps no accounting
    (that needs slurmdbd and a MySQL server), and without a state submitit waits forever for
    the result of a job that ended without one (cancelled, killed, timed out). squeue keeps a
    finished job for MinJobAge (300 s). Any other query goes to the real sacct (which fails)."""
    real = shutil.which("sacct") or "sacct"
    script = folder / "bin" / "sacct"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"""#!/bin/sh
# Written by tests/slurm_cluster.py: submitit's sacct query, answered by squeue (no accounting here).
[ "$1 $2 $3" = "-o JobID,State,NodeList --parsable2" ] || exec {real} "$@"
shift 3
ids=""
while [ $# -ge 2 ] && [ "$1" = "-j" ]; do ids="$ids${{ids:+,}}$2"; shift 2; done
[ $# -eq 0 ] && [ -n "$ids" ] || exec {real} -o JobID,State,NodeList --parsable2 "$@"
echo "JobID|State|NodeList"
exec squeue -h -t all -j "$ids" -o "%i|%T|%N"
""")
    script.chmod(0o755)
    return script.parent


def _memory_mb() -> int:
    """A bit below the memory available now (what slurmd finds must not be less)."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available_kb = int(info.get("MemAvailable", info["MemFree"]).split()[0])
    return max(1, int(available_kb / 1024 * 0.9))


def _free_ports(count: int) -> list[int]:
    """`count` different free ports (all bound at once, so the kernel cannot hand one out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _start_munged(folder: Path, env: dict[str, str], daemons: list[subprocess.Popen[bytes]]) -> None:
    """munged with a fresh key, in the foreground (so it is our child, and reaped)."""
    key = folder / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(128))  # what `mungekey -c -b 1024` writes
        key.chmod(0o600)
    sock = folder / "sockets" / "munge.socket"
    cmd = [_which("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}", f"--pid-file={folder}/munged.pid",
           f"--seed-file={folder}/munged.seed"]  # in the foreground it logs to stderr: munged.out
    daemons.append(_daemon(cmd, folder / "munged.out", env))

    def answers() -> bool:
        if daemons[0].poll() is not None:
            raise RuntimeError(f"munged exited ({daemons[0].returncode}):\n{_tails(folder)}")
        return sock.exists() and subprocess.run(["munge", "-n", "-S", str(sock)], capture_output=True).returncode == 0

    _wait_or_raise(answers, "munged to answer", folder)


def _daemon(cmd: list[str], out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A daemon in the foreground, SIGTERMed by the kernel if the test process dies."""
    with open(out, "wb") as stdout:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _responds(cluster: LocalSlurm, *args: str) -> bool:
    _check_alive(cluster)
    return subprocess.run(args, env={**os.environ, **cluster.env}, capture_output=True, timeout=30).returncode == 0


def _node_state(cluster: LocalSlurm) -> str:
    _check_alive(cluster)
    return cluster.run("sinfo", "-h", "-n", cluster.node, "-o", "%T", check=False).strip()


def _check_alive(cluster: LocalSlurm) -> None:
    for daemon in cluster._daemons:
        if daemon.poll() is not None:
            tails = _tails(cluster.folder)
            if "Address already in use" in tails:
                raise PortTaken(tails)
            raise RuntimeError(f"{daemon.args[0]} exited ({daemon.returncode}):\n{tails}")


def _wait_for(ready: Callable[[], bool], timeout: float) -> bool:
    """Polls `ready` every 0.1 s for at most `timeout` s; whether it became true."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_or_raise(ready: Callable[[], bool], what: str, folder: Path) -> None:
    """`_wait_for` up to START_TIMEOUT_S, else an error with the daemons' log tails."""
    if not _wait_for(ready, START_TIMEOUT_S):
        raise RuntimeError(f"timed out after {START_TIMEOUT_S:.0f} s waiting for {what}:\n{_tails(folder)}")


def _tails(folder: Path, lines: int = 15) -> str:
    """The last lines of each daemon's log (else its console output), for an error message."""
    parts = []
    for name in ("munged", "slurmctld", "slurmd"):
        for path in (folder / f"{name}.log", folder / f"{name}.out"):
            if path.exists() and path.stat().st_size:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(tail))
                break
    return "\n".join(parts) or f"(no logs in {folder})"


def _which(name: str) -> str:
    return shutil.which(name, path=_search_path()) or name


def _search_path() -> str:
    """PATH plus the sbin folders, where munged/slurmctld/slurmd live (not on a user's PATH)."""
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
