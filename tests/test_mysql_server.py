"""tests/mysql_server.py: the throwaway MariaDB server that sweep tests share a study on starts,
takes the `lab` user's password (and only it), and leaves nothing running when stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from mysql_server import mysql_missing, start_mysql
from throwaway_server import alive, two_at_once

MISSING = mysql_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def using(home: Path) -> set[int]:
    """Processes whose command line names the server's folder: mariadbd, and any
    mariadb-install-db or bootstrap mariadbd left behind."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(home).encode() in cmdline.read_bytes() and alive(int(cmdline.parent.name)):
                pids.add(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def connect(server, password: str | None = None):
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=server.port, user="lab", database="sweeps", connect_timeout=10,
                           password=server.password if password is None else password)


def test_start_connect_stop(tmp_path: Path) -> None:
    import pymysql
    import sqlalchemy

    server = start_mysql(tmp_path)
    try:
        assert server.url == f"mysql://lab:{server.password}@127.0.0.1:{server.port}/sweeps"
        assert using(server.home) == {server.pid}, "only mariadbd runs: mariadb-install-db is done"
        with connect(server) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user(), database()")
            assert cur.fetchone() == ("lab@127.0.0.1", "sweeps")
            cur.execute("CREATE TABLE t (x int)")  # `lab` has all of `sweeps`: Optuna makes its tables
            cur.execute("INSERT INTO t VALUES (1)")
            conn.commit()
        engine = sqlalchemy.create_engine(server.sqlalchemy_url)
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT x FROM t")).scalar() == 1
            assert conn.execute(sqlalchemy.text("SELECT GET_LOCK('lab-sweeps', 10)")).scalar() == 1  # a user lock
            assert conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK('lab-sweeps')")).scalar() == 1
        engine.dispose()
        with pytest.raises(pymysql.err.OperationalError, match="Access denied for user 'lab'"):
            connect(server, "wrong")
        with pytest.raises(pymysql.err.OperationalError, match="Access denied for user 'root'"):  # nor root over TCP
            pymysql.connect(host="127.0.0.1", port=server.port, user="root", password="", connect_timeout=10)
    finally:
        server.stop()
    assert not alive(server.pid) and server.process.returncode is not None, "mariadbd ended and reaped"
    assert not using(server.home)
    assert not server.home.exists()
    with pytest.raises(pymysql.err.OperationalError):
        connect(server)
    server.stop()  # again: nothing to do


def test_servers_side_by_side(tmp_path: Path) -> None:
    """Two at once (as pytest-xdist workers start theirs), each on its own port."""
    import pymysql

    with two_at_once(start_mysql, tmp_path) as servers:
        for server in servers:
            with connect(server) as conn, conn.cursor() as cur:
                cur.execute("SELECT @@port")
                assert cur.fetchone() == (server.port,)
        with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
            connect(servers[0], servers[1].password)
