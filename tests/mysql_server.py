"""A throwaway MySQL server (MariaDB) for tests: Optuna's RDBStorage on a real server through
`mysql://` URLs (pymysql), the way several `lab sweep` processes share one study.

`start_mysql(folder)` makes a fresh data directory (mariadb-install-db), starts mariadbd on a free
port of 127.0.0.1 and gives a database `sweeps` to a user `lab`@`127.0.0.1` with a random
password; `stop()` ends it and removes its files. Each call has its own folder and port, so
pytest-xdist workers may each start one at the same time. The programs come from MariaDB (Debian:
`apt-get install mariadb-server`, or just mariadb-server-core and mariadb-client-core); every
option file (/etc/mysql/...) is ignored (`--no-defaults`) and the server the package may start on
port 3306 is never used.

mariadbd is this process's own child, in the foreground, so `stop()` reaps it: where PID 1 reaps
nobody, as in some containers, an orphan would stay behind as a zombie.

As root the server runs as the user `mysql` (else `nobody`) rather than as root, and its files
live in a folder of its own under /tmp: pytest's tmp_path is below /tmp/pytest-of-root/, which
only root may enter (and a unix socket's path must stay short). The only account besides `lab` is
MariaDB's `root`@`localhost` (unix_socket authentication: the OS user of that name, on the socket
in that folder), and the one named after whoever runs the tests when that is not root: the setup
connects with it, and nobody else can.
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

SERVERS = ("mariadbd", "mysqld")  # MariaDB's server; mysqld is its old name (a link) on most systems
INSTALL_DBS = ("mariadb-install-db", "mysql_install_db")
FOLDERS = ("/usr/sbin", "/usr/libexec", "/usr/local/sbin", "/usr/local/bin", "/usr/bin")  # sbin: not on every PATH
RUN_AS = ("mysql", "nobody")  # as root: the first of these that exists runs the server
START_TIMEOUT = 60  # seconds to wait for mariadb-install-db, and for the server to accept connections
STOP_TIMEOUT = 30
READY = "ready for connections"  # mariadbd's log line once it listens
SOCKET_PATH_MAX = 100  # a unix socket's path is at most 107 bytes
# Durability is of no use to a throwaway server: no binary log, the redo log written but never
# flushed at commit, no doublewrite, little memory, no buffer pool dump; no DNS lookups (accounts
# by address); the file-based synchronous I/O (native AIO, libaio or io_uring, may be refused in a
# container, and many servers at once can exhaust fs.aio-max-nr). utf8mb4 as Debian's own config.
# Given to mariadb-install-db too, so its data directory already has the small redo log.
SETTINGS = {
    "skip-name-resolve": None,
    "skip-log-bin": None,
    "innodb-flush-log-at-trx-commit": "0",
    "innodb-doublewrite": "0",
    "innodb-buffer-pool-size": "16M",
    "innodb-log-file-size": "4M",
    "innodb-log-buffer-size": "2M",
    "innodb-use-native-aio": "0",
    "innodb-buffer-pool-dump-at-shutdown": "0",
    "innodb-buffer-pool-load-at-startup": "0",
    "innodb-temp-data-file-path": "ibtmp1:1M:autoextend",
    "innodb-autoextend-increment": "4",
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_general_ci",
    "max-connections": "100",
    "table-open-cache": "400",
}
USER, DATABASE, HOST = "lab", "sweeps", "127.0.0.1"


def _find(names: tuple[str, ...]) -> Path | None:
    """The first of `names` on PATH, else in FOLDERS (Debian keeps mariadbd in /usr/sbin)."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(FOLDERS))
        if found:
            return Path(found)
    return None


def mysql_programs() -> tuple[Path, Path] | None:
    """(mariadbd, mariadb-install-db), or None when either is missing."""
    server, install_db = _find(SERVERS), _find(INSTALL_DBS)
    return (server, install_db) if server and install_db else None


def _run_as() -> pwd.struct_passwd | None:
    """Who runs the server: this user, or as root an unprivileged one (no server as root)."""
    if os.geteuid() != 0:
        try:
            return pwd.getpwuid(os.geteuid())
        except KeyError:  # a uid without a name (some containers): no socket account to set up with
            return None
    for name in RUN_AS:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if user.pw_uid != 0:
            return user
    return None


def mysql_missing() -> str | None:
    """Why no server can be started here (a test's skip reason), or None."""
    if mysql_programs() is None:
        return ("MariaDB server programs (mariadbd, mariadb-install-db) not found: "
                "`apt-get install --no-install-recommends mariadb-server`")
    if _run_as() is None:
        if os.geteuid() == 0:
            return f"running as root and no unprivileged user ({', '.join(RUN_AS)}) to run MariaDB as"
        return f"this user (uid {os.geteuid()}) has no name to run MariaDB as"
    try:
        import pymysql  # noqa: F401
    except ImportError as exc:
        return f"pymysql not importable ({exc}): pip install pymysql"
    return None


def _free_port() -> int:
    """A port free on 127.0.0.1 now; another process may take it before the server binds it, so
    `start_mysql` tries again with another one when the server cannot bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(eq=False)
class MysqlServer:
    """A running throwaway server; `url` is what `lab sweep --storage` takes (`mysql://`, which
    the lab gives to pymysql); `sqlalchemy_url` names the driver for SQLAlchemy itself."""

    url: str
    password: str
    port: int
    home: Path  # the server's own folder: data/, the socket, mariadbd.log
    process: subprocess.Popen[bytes] = field(repr=False)  # mariadbd
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.replace("mysql://", "mysql+pymysql://", 1)

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def socket(self) -> Path:
        return self.home / "mysql.sock"

    @property
    def log(self) -> Path:
        return self.home / "mariadbd.log"

    def stop(self) -> None:
        """Stop the server and remove its folder. Normal shutdown (SIGTERM: open connections are
        ended), else SIGKILL; waiting reaps mariadbd. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        _servers.discard(self)
        try:
            _end(self.process)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> MysqlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_servers: set[MysqlServer] = set()


@atexit.register
def _stop_all() -> None:
    """Servers a test left running end with the test process (a killed one still leaks them)."""
    for server in list(_servers):
        server.stop()


def _end(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _as(user: pwd.struct_passwd, programs: Path) -> dict[str, Any]:
    """subprocess arguments that run a MariaDB program as `user` (none when that is us), with a
    plain environment: C locale, UTC, the programs' folder on PATH (mariadb-install-db looks for
    mariadbd and my_print_defaults)."""
    path = os.pathsep.join(dict.fromkeys([str(programs), *os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)]))
    env = {"PATH": path, "LC_ALL": "C", "LANG": "C", "TZ": "UTC", "HOME": user.pw_dir, "USER": user.pw_name}
    if user.pw_uid == os.geteuid():
        return {"env": env}
    return {"env": env, "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _home(folder: Path, user: pwd.struct_passwd) -> Path:
    """A new folder of the server's own: in `folder` when the server runs as this user, else (or
    when a socket's path there would be too long) in /tmp, which every user may enter."""
    parent = folder if user.pw_uid == os.geteuid() else Path("/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="lab-my-", dir=parent))
    if len(str(home / "mysql.sock.lock")) > SOCKET_PATH_MAX and parent != Path("/tmp"):
        home.rmdir()
        home = Path(tempfile.mkdtemp(prefix="lab-my-", dir="/tmp"))
    os.chown(home, user.pw_uid, user.pw_gid)  # mkdtemp's mode 700: only the server's user (and root) enter
    return home


def _options() -> list[str]:
    return [f"--{key}" if value is None else f"--{key}={value}" for key, value in SETTINGS.items()]


def _ready(process: subprocess.Popen[bytes], log: Path, logged: int) -> bool:
    """Wait until mariadbd says it accepts connections; False when it exited first (its log says why)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with open(log, "rb") as text:
            text.seek(logged)
            if READY.encode() in text.read():
                return True
        time.sleep(0.02)
    _end(process)
    raise RuntimeError(f"MariaDB did not start in {START_TIMEOUT} s:\n{log.read_text(errors='replace')[logged:]}")


def _spawn(server: Path, user: pwd.struct_passwd, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """mariadbd on a free port, ready; retries with another port when one was taken between
    `_free_port()` and the server's bind (pytest-xdist workers start theirs at once)."""
    log = home / "mariadbd.log"
    for _ in range(5):
        port, logged = _free_port(), log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            # its own session: a Ctrl-C at the terminal reaches pytest, whose teardown stops the server
            process = subprocess.Popen(
                [str(server), "--no-defaults", f"--datadir={home / 'data'}", f"--port={port}", f"--bind-address={HOST}",
                 f"--socket={home / 'mysql.sock'}", f"--pid-file={home / 'mariadbd.pid'}", f"--tmpdir={home}",
                 *_options()],
                cwd=home, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                **_as(user, server.parent))
        if _ready(process, log, logged):
            return process, port
        process.wait()
        text = log.read_text(errors="replace")[logged:]
        if "Address already in use" not in text:  # only a port taken meanwhile is worth a retry
            raise RuntimeError(f"MariaDB did not start (exit {process.returncode}):\n{text.strip()}")
    raise RuntimeError(f"MariaDB found no free port in 5 tries:\n{log.read_text(errors='replace')}")


def start_mysql(folder: Path) -> MysqlServer:
    """A fresh server with user `lab`@`127.0.0.1`, a random password and a database `sweeps`;
    raises RuntimeError when it cannot start (`mysql_missing()` says why)."""
    reason = mysql_missing()
    if reason:
        raise RuntimeError(reason)
    import pymysql

    programs, user = mysql_programs(), _run_as()
    assert programs is not None and user is not None
    server, install_db = programs
    admin = pwd.getpwuid(os.geteuid()).pw_name  # unix_socket authentication: this process's own OS user
    home = _home(folder, user)
    try:
        # No test database, no anonymous accounts; root@localhost by unix_socket only (and `admin`).
        done = subprocess.run([str(install_db), "--no-defaults", f"--datadir={home / 'data'}", "--skip-test-db",
                               "--auth-root-authentication-method=socket", f"--auth-root-socket-user={admin}",
                               *_options()],
                              cwd=home, capture_output=True, text=True, timeout=START_TIMEOUT,
                              **_as(user, server.parent))
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr).strip()}")
        process, port = _spawn(server, user, home)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    mysql = MysqlServer(url="", password=secrets.token_hex(16), port=port, home=home, process=process)
    _servers.add(mysql)
    try:
        conn = pymysql.connect(unix_socket=str(mysql.socket), user=admin, autocommit=True, connect_timeout=30)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (USER, HOST, mysql.password))
                cur.execute(f"CREATE DATABASE `{DATABASE}`")
                cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO %s@%s", (USER, HOST))
        finally:
            conn.close()
    except BaseException:
        mysql.stop()
        raise
    mysql.url = f"mysql://{USER}:{mysql.password}@{HOST}:{port}/{DATABASE}"
    return mysql
