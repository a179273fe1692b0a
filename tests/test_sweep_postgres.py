"""Sweep workers on a real PostgreSQL server (issue 33): a throwaway server per test
(tests/postgres_server.py; skipped with the reason where its binaries are missing), two and
four bayes workers started together on a fresh database (a grid's claims take the same lock:
tests/test_experiments.py shares one between three workers on SQLite)."""

from __future__ import annotations

import pytest
from postgres_server import postgres_missing, start_postgres

from conftest import bayes_workers_share_a_study

MISSING = postgres_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.slow]


@pytest.fixture
def postgres(tmp_path):
    with start_postgres(tmp_path / "pg") as server:
        yield server


@pytest.mark.parametrize("n", [2, 4])
def test_bayes_workers_started_together_on_a_fresh_database_run_their_count_each(toy_plugins, tmp_path, postgres, n):
    bayes_workers_share_a_study(postgres, tmp_path, "pg", n)
