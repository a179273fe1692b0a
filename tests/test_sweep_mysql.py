"""Sweep workers on a real MySQL server (MariaDB), as tests/test_sweep_postgres.py does on
PostgreSQL: a throwaway server per test (tests/mysql_server.py; skipped with the reason where its
programs are missing), two bayes workers started together on a fresh database through a
`mysql://` URL, and the lock the workers take turns with (`GET_LOCK`) really held."""

from __future__ import annotations

import pytest
from mysql_server import mysql_missing, start_mysql

from conftest import bayes_workers_share_a_study

MISSING = mysql_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.slow]


@pytest.fixture
def mysql(tmp_path):
    with start_mysql(tmp_path / "my") as server:
        yield server


def test_study_lock_is_held_on_the_server(mysql):
    """StudyLock's GET_LOCK takes the lock (MariaDB refuses a negative timeout: NULL, not held)."""
    import sqlalchemy

    from lab.experiments.storage import Storage

    engine = sqlalchemy.create_engine(mysql.sqlalchemy_url, poolclass=sqlalchemy.pool.NullPool)
    with Storage.parse(mysql.url).lock(), engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT IS_USED_LOCK('lab-sweeps')")).scalar() is not None
        assert conn.execute(sqlalchemy.text("SELECT GET_LOCK('lab-sweeps', 0)")).scalar() == 0, "another waits"
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT IS_USED_LOCK('lab-sweeps')")).scalar() is None, "released"


def test_bayes_workers_started_together_on_a_fresh_database_run_their_count_each(toy_plugins, tmp_path, mysql):
    bayes_workers_share_a_study(mysql, tmp_path, "my", 2)
