"""What the throwaway database servers for tests (tests/postgres_server.py, tests/mysql_server.py)
share: each starts a real server of its own in a fresh folder, on a free port of 127.0.0.1, and
`stop()` ends it and removes its files. Only the database's own parts stay in those modules (how
to make the data directory, start the server and tell it is ready, make the user and database).

The server is this process's own child, in its own session, so `stop()` reaps it: where PID 1
reaps nobody, as in some containers, an orphan would stay behind as a zombie; and a Ctrl-C at the
terminal reaches pytest, whose teardown stops the server, not the server itself.

Neither PostgreSQL nor MariaDB runs as root, so as root the server runs as an unprivileged user
and its folder lives under /tmp: pytest's tmp_path is below /tmp/pytest-of-root/, which only root
may enter (and a unix socket's path must stay short).

`two_at_once`, `alive` and `family` are for the tests of these modules: several servers at once,
and what runs after `stop()`.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds to wait for a data directory, and for the server to accept connections (a loaded CI machine)
STOP_TIMEOUT = 30
PORT_TRIES = 5
SOCKET_PATH_MAX = 100  # a unix socket's path is at most 107 bytes
TMP = Path("/tmp")

Signals = tuple[tuple[signal.Signals, float], ...]  # sent in turn, each with the seconds to wait for the exit
S = TypeVar("S", bound="ThrowawayServer")


def run_as(names: tuple[str, ...]) -> pwd.struct_passwd | None:
    """Who runs the server: this user, or as root the first of `names` that exists and is not root
    (the servers refuse root). None when there is nobody: a root without those users, or a uid
    without a name (some containers), which has no HOME or socket account to give the server."""
    if os.geteuid() != 0:
        try:
            return pwd.getpwuid(os.geteuid())
        except KeyError:
            return None
    for name in names:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if user.pw_uid != 0:
            return user
    return None


def missing(what: str, programs: str | None, names: tuple[str, ...], driver: str, pip: str) -> str | None:
    """Why the server `what` cannot be started here (a test's skip reason), or None: `programs`,
    why its programs were not found (None: found); nobody to run it as (`run_as(names)`); its
    Python driver module not importable (`pip install PIP`)."""
    if programs:
        return programs
    if run_as(names) is None:
        if os.geteuid() == 0:
            return f"running as root and no unprivileged user ({', '.join(names)}) to run {what} as"
        return f"this user (uid {os.geteuid()}) has no name to run {what} as"
    try:
        importlib.import_module(driver)
    except ImportError as exc:
        return f"{driver} not importable ({exc}): pip install {pip}"
    return None


def as_user(user: pwd.struct_passwd, *path_first: Path) -> dict[str, Any]:
    """subprocess arguments that run a server program as `user` (no switch when that is us), with a
    plain environment: C locale, UTC (no time zone to probe), `path_first` ahead of PATH (helpers
    a program looks for beside itself)."""
    path = os.pathsep.join(dict.fromkeys([*map(str, path_first), *os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)]))
    env = {"PATH": path, "LC_ALL": "C", "LANG": "C", "TZ": "UTC", "HOME": user.pw_dir, "USER": user.pw_name}
    if user.pw_uid == os.geteuid():
        return {"env": env}
    return {"env": env, "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def make_home(folder: Path, user: pwd.struct_passwd, prefix: str, socket_file: str, inside: tuple[str, ...] = ()) -> Path:
    """A new folder of the server's own, owned by `user`, with the folders `inside`: in `folder`
    when the server runs as this user, else (or when `socket_file`'s path in it would be too long
    for a unix socket) in /tmp, which every user may enter."""
    parent = folder if user.pw_uid == os.geteuid() else TMP
    parent.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if len(str(home / socket_file)) > SOCKET_PATH_MAX and parent != TMP:
        home.rmdir()
        home = Path(tempfile.mkdtemp(prefix=prefix, dir=TMP))
    for name in inside:
        (home / name).mkdir()
    for path in (home, *(home / name for name in inside)):  # mkdtemp's mode 700: only the server's user (and root) enter
        os.chown(path, user.pw_uid, user.pw_gid)
    return home


def free_port() -> int:
    """A port free on 127.0.0.1 now; another process may take it before the server binds it, so
    `spawn` tries again with another one when the server cannot bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def end(process: subprocess.Popen[bytes], signals: Signals) -> None:
    """Send `signals` in turn until the process exits; waiting reaps it."""
    for sig, wait in signals:
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _logged_since(log: Path, offset: int) -> bytes:
    with open(log, "rb") as text:
        text.seek(offset)
        return text.read()


def _ready(what: str, process: subprocess.Popen[bytes], ready: Callable[[bytes], bool], log: Path, logged: int,
           stop: Signals) -> bool:
    """Wait until `ready(what the server logged since it started)`; False when it exited first (its
    log says why); ended and RuntimeError after START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready(_logged_since(log, logged)):
            return True
        time.sleep(0.02)
    end(process, stop)
    raise RuntimeError(f"{what} did not start in {START_TIMEOUT} s:\n{_logged_since(log, logged).decode(errors='replace')}")


def spawn(what: str, command: Callable[[int], list[str]], home: Path, log: Path, ready: Callable[[bytes], bool],
          stop: Signals, **popen: Any) -> tuple[subprocess.Popen[bytes], int]:
    """The server `command(port)` on a free port, ready, its output appended to `log`; tries again
    with another port when one was taken between `free_port()` and the server's bind (pytest-xdist
    workers start theirs at once). `popen`: `as_user(...)`."""
    for _ in range(PORT_TRIES):
        port, logged = free_port(), log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            process = subprocess.Popen(command(port), cwd=home, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True, **popen)
        if _ready(what, process, ready, log, logged, stop):
            return process, port
        process.wait()
        text = _logged_since(log, logged).decode(errors="replace")
        if "Address already in use" not in text:  # only a port taken meanwhile is worth a retry
            raise RuntimeError(f"{what} did not start (exit {process.returncode}):\n{text.strip()}")
    raise RuntimeError(f"{what} found no free port in {PORT_TRIES} tries:\n{log.read_text(errors='replace')}")


@dataclass(eq=False)
class ThrowawayServer:
    """A running throwaway server; `url` is what `lab sweep --storage` takes, `sqlalchemy_url` what
    SQLAlchemy (and Optuna's RDBStorage) takes."""

    STOP: ClassVar[Signals] = ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 10))  # how `stop()` ends it
    LOG: ClassVar[str]  # the server's output, in `home`

    url: str
    password: str
    port: int
    home: Path  # the server's own folder: data/, the socket, the log
    process: subprocess.Popen[bytes] = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def sqlalchemy_url(self) -> str:
        return self.url

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / self.LOG

    @classmethod
    def launch(cls: type[S], home: Path, start: Callable[[], tuple[subprocess.Popen[bytes], int]],
               setup: Callable[[S], str]) -> S:
        """The server that `start()` runs in `home` (its process and port), with a random password
        that `setup(server)` gives the user it makes, returning the url. Whatever fails leaves
        nothing behind: `home` removed, the server stopped."""
        try:
            process, port = start()
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        server = cls(url="", password=secrets.token_hex(16), port=port, home=home, process=process)
        _servers.add(server)
        try:
            server.url = setup(server)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """Stop the server (`STOP`'s signals in turn; waiting reaps it) and remove its folder. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        _servers.discard(self)
        try:
            end(self.process, self.STOP)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_servers: set[ThrowawayServer] = set()


@atexit.register
def _stop_all() -> None:
    """Servers a test left running end with the test process (a killed one still leaks them)."""
    for server in list(_servers):
        server.stop()


@contextmanager
def two_at_once(start: Callable[[Path], S], folder: Path) -> Iterator[tuple[S, S]]:
    """Two servers started at the same time (as pytest-xdist workers start theirs), checked to have
    each its own port, folder and password, then stopped: nothing of either is left running."""
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(start, [folder / "a", folder / "b"])
    try:
        assert first.port != second.port and first.home != second.home and first.password != second.password
        yield first, second
    finally:
        first.stop()
        second.stop()
    assert not any(alive(server.pid) or server.home.exists() for server in (first, second))


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def family(pid: int) -> set[int]:
    """The process and its children (a postmaster's background workers and backends)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return {pid} | children
