"""A throwaway PostgreSQL server for tests: Optuna's RDBStorage on a real server, the way several
`lab sweep` processes share one study, rather than SQLite standing in for it.

`start_postgres(folder)` makes a fresh cluster (initdb), starts it on a free port of 127.0.0.1 and
gives a database `sweeps` owned by a role `lab` with a random password; `stop()` ends it and
removes its files. Each call has its own folder and port, so pytest-xdist workers may each start
one at the same time. The server programs come from PostgreSQL itself (Debian: `apt-get install
postgresql-15`); the cluster that package may start on port 5432 is never used.

The postmaster is this process's own child (not `pg_ctl start`'s orphan), so `stop()` reaps it:
where PID 1 reaps nobody, as in some containers, an orphan would stay behind as a zombie.

PostgreSQL refuses to run as root, so as root the server runs as the user `postgres` (else
`nobody`), and its files live in a folder of its own under /tmp: pytest's tmp_path is below
/tmp/pytest-of-root/, which only root may enter (and a unix socket's path must stay short).
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROGRAMS = ("initdb", "postgres")
RUN_AS = ("postgres", "nobody")  # as root: the first of these that exists runs the server
START_TIMEOUT = 60  # seconds to wait for initdb, and for the server to accept connections (a loaded CI machine)
STOP_TIMEOUT = 30
SOCKET_PATH_MAX = 100  # a unix socket's path is at most 107 bytes; the socket's own name is added
# Durability is of no use to a throwaway server: no fsync, no waiting for the WAL, little memory,
# no background work; the log goes to a file beside the data (`PostgresServer.log`).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "16MB",
    "max_connections": "100",
    "autovacuum": "off",
    "jit": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
ROLE, DATABASE = "lab", "sweeps"


def _has_programs(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in PROGRAMS)


def _version_key(folder: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): the newest version first, 9.6 below 10."""
    try:
        return tuple(int(part) for part in folder.parent.name.split("."))
    except ValueError:
        return (-1,)


def postgres_binaries() -> Path | None:
    """The folder holding initdb and postgres: $PG_BIN when set (and then only it), else
    `pg_config --bindir`, else /usr/lib/postgresql/*/bin (Debian's layout, not on PATH), newest
    first, else where PATH's initdb really lives; None when none has both."""
    if os.environ.get("PG_BIN"):
        folder = Path(os.environ["PG_BIN"])
        return folder if _has_programs(folder) else None
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:  # e.g. /usr/local/bin/initdb, a link into a folder that also holds postgres
        candidates += [Path(initdb).parent, Path(initdb).resolve().parent]
    return next((folder for folder in candidates if _has_programs(folder)), None)


def _run_as() -> pwd.struct_passwd | None:
    """Who runs the server: this user, or as root an unprivileged one (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in RUN_AS:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if user.pw_uid != 0:
            return user
    return None


def postgres_missing() -> str | None:
    """Why no server can be started here (a test's skip reason), or None."""
    if postgres_binaries() is None:
        return ("PostgreSQL server programs (initdb, postgres) not found: "
                "`apt-get install postgresql-15`, or set PG_BIN to their folder")
    if _run_as() is None:
        return f"running as root and no unprivileged user ({', '.join(RUN_AS)}) to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg not importable ({exc}): pip install 'psycopg[binary]'"
    return None


def _free_port() -> int:
    """A port free on 127.0.0.1 now; another process may take it before the server binds it, so
    `start_postgres` tries again with another one when the server cannot bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(eq=False)
class PostgresServer:
    """A running throwaway server; `url` is what Optuna and SQLAlchemy take."""

    url: str
    password: str
    port: int
    home: Path  # the server's own folder: data/, the socket folder s/, postgres.log
    process: subprocess.Popen[bytes] = field(repr=False)  # the postmaster
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "s"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    def stop(self) -> None:
        """Stop the server and remove its folder. Fast shutdown (SIGINT: open connections are
        ended), else immediate (SIGQUIT), else SIGKILL; waiting reaps the postmaster. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        _servers.discard(self)
        try:
            _end(self.process)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_servers: set[PostgresServer] = set()


@atexit.register
def _stop_all() -> None:
    """Servers a test left running end with the test process (a killed one still leaks them)."""
    for server in list(_servers):
        server.stop()


def _end(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _as(user: pwd.struct_passwd) -> dict[str, Any]:
    """subprocess arguments that run a PostgreSQL program as `user` (none when that is us), with a
    plain environment: C locale, UTC (initdb need not probe the time zone)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC",
           "HOME": user.pw_dir}
    if user.pw_uid == os.geteuid():
        return {"env": env}
    return {"env": env, "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _home(folder: Path, user: pwd.struct_passwd) -> Path:
    """A new folder of the server's own: in `folder` when the server runs as this user, else (or
    when a socket's path there would be too long) in /tmp, which every user may enter."""
    parent = folder if user.pw_uid == os.geteuid() else Path("/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="lab-pg-", dir=parent))
    if len(str(home / "s" / ".s.PGSQL.65535.lock")) > SOCKET_PATH_MAX and parent != Path("/tmp"):
        home.rmdir()
        home = Path(tempfile.mkdtemp(prefix="lab-pg-", dir="/tmp"))
    (home / "s").mkdir()
    for path in (home, home / "s"):  # mkdtemp's mode 700: only the server's user (and root) enter
        os.chown(path, user.pw_uid, user.pw_gid)
    return home


def _ready(process: subprocess.Popen[bytes], data: Path) -> bool:
    """Wait until the postmaster accepts connections (postmaster.pid's 8th line says "ready", as
    `pg_ctl start -w` waits); False when it exited first (its log says why)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            lines = (data / "postmaster.pid").read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) >= 8 and lines[7].strip() == "ready":
            return True
        time.sleep(0.01)
    _end(process)
    raise RuntimeError(f"PostgreSQL did not start in {START_TIMEOUT} s")


def _spawn(bindir: Path, user: pwd.struct_passwd, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The postmaster on a free port, ready; retries with another port when one was taken between
    `_free_port()` and the server's bind (pytest-xdist workers start theirs at once)."""
    log = home / "postgres.log"
    for _ in range(5):
        port, logged = _free_port(), log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            # its own session: a Ctrl-C at the terminal reaches pytest, whose teardown stops the server
            process = subprocess.Popen([str(bindir / "postgres"), "-D", str(home / "data"), "-p", str(port)],
                                       cwd=home, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, **_as(user))
        if _ready(process, home / "data"):
            return process, port
        process.wait()
        text = log.read_text(errors="replace")[logged:]
        if "Address already in use" not in text:  # only a port taken meanwhile is worth a retry
            raise RuntimeError(f"PostgreSQL did not start (exit {process.returncode}):\n{text.strip()}")
    raise RuntimeError(f"PostgreSQL found no free port in 5 tries:\n{log.read_text(errors='replace')}")


def start_postgres(folder: Path) -> PostgresServer:
    """A fresh server with role `lab`, a random password and a database `sweeps`; raises
    RuntimeError when it cannot start (`postgres_missing()` says why)."""
    reason = postgres_missing()
    if reason:
        raise RuntimeError(reason)
    import psycopg
    from psycopg import sql

    bindir, user = postgres_binaries(), _run_as()
    assert bindir is not None and user is not None
    home = _home(folder, user)
    data, sockets = home / "data", home / "s"
    try:
        # Local (socket) connections trust: only the server's user and root may enter `sockets`.
        done = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                               "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
                               "--no-instructions"], cwd=home, capture_output=True, text=True, timeout=START_TIMEOUT,
                              **_as(user))
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/postgres_server.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in SETTINGS.items())
            conf.write(f"unix_socket_directories = '{sockets}'\n")
        process, port = _spawn(bindir, user, home)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    server = PostgresServer(url="", password=secrets.token_hex(16), port=port, home=home, process=process)
    _servers.add(server)
    try:
        with psycopg.connect(host=str(sockets), port=port, user="postgres", dbname="postgres", autocommit=True,
                             connect_timeout=30) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE),
                                                                              sql.Literal(server.password)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(ROLE)))
    except BaseException:
        server.stop()
        raise
    server.url = f"postgresql://{ROLE}:{server.password}@127.0.0.1:{port}/{DATABASE}"
    return server
