"""A throwaway MySQL server (MariaDB) for tests: Optuna's RDBStorage on a real server through
`mysql://` URLs (pymysql), the way several `lab sweep` processes share one study.

`start_mysql(folder)` makes a fresh data directory (mariadb-install-db), starts mariadbd on a free
port of 127.0.0.1 and gives a database `sweeps` to a user `lab`@`127.0.0.1` with a random
password; `stop()` ends it and removes its files. Each call has its own folder and port, so
pytest-xdist workers may each start one at the same time. The programs come from MariaDB (Debian:
`apt-get install mariadb-server`, or just mariadb-server-core and mariadb-client-core); every
option file (/etc/mysql/...) is ignored (`--no-defaults`) and the server the package may start on
port 3306 is never used.

mariadbd runs in the foreground, as root as the user `mysql` (else `nobody`): tests/throwaway_server.py
says why, and holds what this module shares with tests/postgres_server.py. The only account
besides `lab` is MariaDB's `root`@`localhost` (unix_socket authentication: the OS user of that
name, on the socket in the server's folder), and the one named after whoever runs the tests when
that is not root: the setup connects with it, and nobody else can.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from throwaway_server import HOST, START_TIMEOUT, ThrowawayServer, as_user, make_home, missing, run_as, spawn

SERVERS = ("mariadbd", "mysqld")  # MariaDB's server; mysqld is its old name (a link) on most systems
INSTALL_DBS = ("mariadb-install-db", "mysql_install_db")
FOLDERS = ("/usr/sbin", "/usr/libexec", "/usr/local/sbin", "/usr/local/bin", "/usr/bin")  # sbin: not on every PATH
RUN_AS = ("mysql", "nobody")  # as root: the first of these that exists runs the server
READY = b"ready for connections"  # mariadbd's log line once it listens
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
USER, DATABASE = "lab", "sweeps"


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


def mysql_missing() -> str | None:
    """Why no server can be started here (a test's skip reason), or None."""
    programs = None if mysql_programs() else ("MariaDB server programs (mariadbd, mariadb-install-db) not found: "
                                              "`apt-get install --no-install-recommends mariadb-server`")
    return missing("MariaDB", programs, RUN_AS, "pymysql", "pymysql")


class MysqlServer(ThrowawayServer):
    """A running throwaway server; `url` is what `lab sweep --storage` takes (`mysql://`, which
    the lab gives to pymysql); `sqlalchemy_url` names the driver for SQLAlchemy itself. `stop()`:
    normal shutdown (SIGTERM: open connections are ended), else SIGKILL."""

    LOG = "mariadbd.log"

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.replace("mysql://", "mysql+pymysql://", 1)

    @property
    def socket(self) -> Path:
        return self.home / "mysql.sock"


def _options() -> list[str]:
    return [f"--{key}" if value is None else f"--{key}={value}" for key, value in SETTINGS.items()]


def _install_and_start(server: Path, install_db: Path, user: pwd.struct_passwd, admin: str,
                       home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A new data directory in `home`/data (mariadb-install-db), and mariadbd on a free port."""
    # No test database, no anonymous accounts; root@localhost by unix_socket only (and `admin`).
    # The programs' folder first on PATH: mariadb-install-db looks for mariadbd and my_print_defaults.
    done = subprocess.run([str(install_db), "--no-defaults", f"--datadir={home / 'data'}", "--skip-test-db",
                           "--auth-root-authentication-method=socket", f"--auth-root-socket-user={admin}",
                           f"--tmpdir={home}", *_options()],  # its own temporary tables: two bootstraps in /tmp collided
                          cwd=home, capture_output=True, text=True, timeout=START_TIMEOUT,
                          **as_user(user, server.parent))
    if done.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed ({done.returncode}): {(done.stdout + done.stderr).strip()}")
    return spawn("MariaDB",
                 lambda port: [str(server), "--no-defaults", f"--datadir={home / 'data'}", f"--port={port}",
                               f"--bind-address={HOST}", f"--socket={home / 'mysql.sock'}",
                               f"--pid-file={home / 'mariadbd.pid'}", f"--tmpdir={home}", *_options()],
                 home, home / MysqlServer.LOG, lambda logged: READY in logged, MysqlServer.STOP,
                 **as_user(user, server.parent))


def _create_user(admin: str, server: MysqlServer) -> str:
    """User `lab`@`127.0.0.1` with the server's password and all of a new database `sweeps`; its url."""
    import pymysql

    conn = pymysql.connect(unix_socket=str(server.socket), user=admin, autocommit=True, connect_timeout=30)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (USER, HOST, server.password))
            cur.execute(f"CREATE DATABASE `{DATABASE}`")
            cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO %s@%s", (USER, HOST))
    finally:
        conn.close()
    return f"mysql://{USER}:{server.password}@{HOST}:{server.port}/{DATABASE}"


def start_mysql(folder: Path) -> MysqlServer:
    """A fresh server with user `lab`@`127.0.0.1`, a random password and a database `sweeps`;
    raises RuntimeError when it cannot start (`mysql_missing()` says why)."""
    reason = mysql_missing()
    if reason:
        raise RuntimeError(reason)
    programs, user = mysql_programs(), run_as(RUN_AS)
    assert programs is not None and user is not None
    server, install_db = programs
    admin = pwd.getpwuid(os.geteuid()).pw_name  # unix_socket authentication: this process's own OS user
    home = make_home(folder, user, "lab-my-", "mysql.sock.lock")
    return MysqlServer.launch(home, lambda: _install_and_start(server, install_db, user, admin, home),
                              lambda mysql: _create_user(admin, mysql))
