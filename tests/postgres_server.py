"""A throwaway PostgreSQL server for tests: Optuna's RDBStorage on a real server, the way several
`lab sweep` processes share one study, rather than SQLite standing in for it.

`start_postgres(folder)` makes a fresh cluster (initdb), starts it on a free port of 127.0.0.1 and
gives a database `sweeps` owned by a role `lab` with a random password; `stop()` ends it and
removes its files. Each call has its own folder and port, so pytest-xdist workers may each start
one at the same time. The server programs come from PostgreSQL itself (Debian: `apt-get install
postgresql-15`); the cluster that package may start on port 5432 is never used.

The postmaster runs in the foreground (not `pg_ctl start`'s orphan), as root as the user
`postgres` (else `nobody`): tests/throwaway_server.py says why, and holds what this module shares
with tests/mysql_server.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from throwaway_server import (
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ThrowawayServer,
    as_user,
    make_home,
    missing,
    run_as,
    spawn,
)

PROGRAMS = ("initdb", "postgres")
RUN_AS = ("postgres", "nobody")  # as root: the first of these that exists runs the server
# Durability is of no use to a throwaway server: no fsync, no waiting for the WAL, little memory,
# no background work; the log goes to a file beside the data (`PostgresServer.log`).
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
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


def postgres_missing() -> str | None:
    """Why no server can be started here (a test's skip reason), or None."""
    programs = None if postgres_binaries() else ("PostgreSQL server programs (initdb, postgres) not found: "
                                                 "`apt-get install postgresql-15`, or set PG_BIN to their folder")
    return missing("PostgreSQL", programs, RUN_AS, "psycopg", "'psycopg[binary]'")


class PostgresServer(ThrowawayServer):
    """A running throwaway server; `url` is what Optuna and SQLAlchemy take."""

    # Fast shutdown (SIGINT: open connections are ended), else immediate (SIGQUIT), else SIGKILL.
    STOP = ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 10), (signal.SIGKILL, 10))
    LOG = "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.home / "s"


def _postmaster_ready(data: Path) -> bool:
    """Whether the postmaster accepts connections: postmaster.pid's 8th line says "ready", as
    `pg_ctl start -w` waits (the log says nothing at log_min_messages=warning)."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _initdb_and_start(bindir: Path, user: pwd.struct_passwd, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A new cluster in `home`/data, set up for a throwaway server, and its postmaster on a free port."""
    data, sockets = home / "data", home / "s"
    # Local (socket) connections trust: only the server's user and root may enter `sockets`.
    done = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                           "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
                           "--no-instructions"], cwd=home, capture_output=True, text=True, timeout=START_TIMEOUT,
                          **as_user(user))
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
    with open(data / "postgresql.conf", "a") as conf:
        conf.write("\n# tests/postgres_server.py\n")
        conf.writelines(f"{key} = {value}\n" for key, value in SETTINGS.items())
        conf.write(f"unix_socket_directories = '{sockets}'\n")
    return spawn("PostgreSQL", lambda port: [str(bindir / "postgres"), "-D", str(data), "-p", str(port)], home,
                 home / PostgresServer.LOG, lambda _logged: _postmaster_ready(data), PostgresServer.STOP, **as_user(user))


def _create_role(server: PostgresServer) -> str:
    """Role `lab` with the server's password, owning a new database `sweeps`; its url."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres",
                         autocommit=True, connect_timeout=30) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE),
                                                                          sql.Literal(server.password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(ROLE)))
    return f"postgresql://{ROLE}:{server.password}@{HOST}:{server.port}/{DATABASE}"


def start_postgres(folder: Path) -> PostgresServer:
    """A fresh server with role `lab`, a random password and a database `sweeps`; raises
    RuntimeError when it cannot start (`postgres_missing()` says why)."""
    reason = postgres_missing()
    if reason:
        raise RuntimeError(reason)
    bindir, user = postgres_binaries(), run_as(RUN_AS)
    assert bindir is not None and user is not None
    home = make_home(folder, user, "lab-pg-", "s/.s.PGSQL.65535.lock", inside=("s",))
    return PostgresServer.launch(home, lambda: _initdb_and_start(bindir, user, home), _create_role)
