"""tests/postgres_server.py: the throwaway PostgreSQL server that sweep tests share a study on
starts, takes the `lab` role's password (and only it), and leaves nothing running when stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres_server import postgres_missing, start_postgres
from throwaway_server import alive, family, two_at_once

MISSING = postgres_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def test_start_connect_stop(tmp_path: Path) -> None:
    import psycopg
    import sqlalchemy

    server = start_postgres(tmp_path)
    try:
        assert server.url == f"postgresql://lab:{server.password}@127.0.0.1:{server.port}/sweeps"
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == ("lab", "sweeps")
            conn.execute("CREATE TABLE t (x int)")  # `lab` owns `sweeps`: Optuna makes its tables
            conn.execute("INSERT INTO t VALUES (1)")
        engine = sqlalchemy.create_engine(server.url)
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT x FROM t")).scalar() == 1
            processes = family(server.pid)  # with this connection's backend
        engine.dispose()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(server.url.replace(server.password, "wrong"), connect_timeout=10)
        assert len(processes) > 2
    finally:
        server.stop()
    assert not any(alive(pid) for pid in processes)
    assert not server.home.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=5)
    server.stop()  # again: nothing to do


def test_servers_side_by_side(tmp_path: Path) -> None:
    """Two at once (as pytest-xdist workers start theirs), each on its own port."""
    import psycopg

    with two_at_once(start_postgres, tmp_path) as servers:
        for server in servers:
            with psycopg.connect(server.url) as conn:
                assert conn.execute("SELECT current_setting('port')::int").fetchone() == (server.port,)
