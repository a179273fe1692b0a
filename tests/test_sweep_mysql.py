"""Sweep workers on a real MySQL server (MariaDB), as tests/test_sweep_postgres.py does on
PostgreSQL: a throwaway server per test (tests/mysql_server.py; skipped with the reason where its
programs are missing), two bayes workers started together on a fresh database through a
`mysql://` URL, and the lock the workers take turns with (`GET_LOCK`) really held."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mysql_server import mysql_missing, start_mysql

from conftest import runs_dir

MISSING = mysql_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.slow]

BAYES = {"algo": {"value": "toy"}, "data": {"value": "toy-data"}, "steps": {"value": 40},
         "learning_rate": {"distribution": "log_uniform_values", "min": 0.001, "max": 1.0}}


@pytest.fixture
def mysql(tmp_path):
    with start_mysql(tmp_path / "my") as server:
        yield server


def workers(spec: Path, n: int, *flags: str) -> list[str]:
    """`lab sweep SPEC FLAGS` started `n` times at once; their stderr (all exit 0)."""
    procs = [subprocess.Popen([sys.executable, "-m", "lab", "sweep", str(spec), *flags], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    errs = [proc.communicate(timeout=600)[1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), errs
    return errs


def test_study_lock_is_held_on_the_server(mysql):
    """StudyLock's GET_LOCK takes the lock (MariaDB refuses a negative timeout: NULL, not held)."""
    import sqlalchemy

    from lab.experiments.storage import Storage

    engine = sqlalchemy.create_engine(mysql.sqlalchemy_url, poolclass=sqlalchemy.pool.NullPool)
    with Storage.parse(mysql.url).lock("s"), engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT IS_USED_LOCK('lab-sweeps')")).scalar() is not None
        assert conn.execute(sqlalchemy.text("SELECT GET_LOCK('lab-sweeps', 0)")).scalar() == 0, "another waits"
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT IS_USED_LOCK('lab-sweeps')")).scalar() is None, "released"


def test_bayes_workers_started_together_on_a_fresh_database_run_their_count_each(toy_plugins, tmp_path, mysql):
    import optuna

    n = 2
    spec = tmp_path / "my.yaml"
    spec.write_text(yaml.safe_dump({"method": "bayes", "metric": {"name": "eval/accuracy", "goal": "maximize"},
                                    "parameters": BAYES}))
    errs = workers(spec, n, "--count", "3", "--storage", mysql.url)
    study = optuna.load_study(study_name="my", storage=mysql.sqlalchemy_url)
    trials = study.get_trials()
    assert len(trials) == 3 * n and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.params["learning_rate"] for t in trials}) == 3 * n, "every parameter set is distinct"
    assert len({t.user_attrs["worker"] for t in trials}) == n
    assert sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("my-")) == \
        [f"my-{i:03d}" for i in range(1, 3 * n + 1)]
    shown = mysql.url.replace(mysql.password, "***")
    assert all(f"study: {shown}" in err and mysql.password not in err for err in errs)
    for run in runs_dir().iterdir():  # no run folder holds the password
        for path in run.rglob("*"):
            assert not path.is_file() or mysql.password.encode() not in path.read_bytes(), path
