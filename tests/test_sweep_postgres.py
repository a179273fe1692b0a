"""Sweep workers on a real PostgreSQL server (issue 33): a throwaway server per test
(tests/postgres_server.py; skipped with the reason where its binaries are missing), two and
four bayes workers started together on a fresh database (a grid's claims take the same lock:
tests/test_experiments.py shares one between three workers on SQLite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from postgres_server import postgres_missing, start_postgres

from conftest import runs_dir

MISSING = postgres_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.slow]

BAYES = {"algo": {"value": "toy"}, "data": {"value": "toy-data"}, "steps": {"value": 40},
         "learning_rate": {"distribution": "log_uniform_values", "min": 0.001, "max": 1.0}}


@pytest.fixture
def postgres(tmp_path):
    with start_postgres(tmp_path / "pg") as server:
        yield server


def workers(spec: Path, n: int, *flags: str) -> list[str]:
    """`lab sweep SPEC FLAGS` started `n` times at once; their stderr (all exit 0)."""
    procs = [subprocess.Popen([sys.executable, "-m", "lab", "sweep", str(spec), *flags], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    errs = [proc.communicate(timeout=600)[1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), errs
    return errs


@pytest.mark.parametrize("n", [2, 4])
def test_bayes_workers_started_together_on_a_fresh_database_run_their_count_each(toy_plugins, tmp_path, postgres, n):
    import optuna

    spec = tmp_path / "pg.yaml"
    spec.write_text(yaml.safe_dump({"method": "bayes", "metric": {"name": "eval/accuracy", "goal": "maximize"},
                                    "parameters": BAYES}))
    errs = workers(spec, n, "--count", "3", "--storage", postgres.url)
    study = optuna.load_study(study_name="pg", storage=postgres.url)
    trials = study.get_trials()
    assert len(trials) == 3 * n and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.params["learning_rate"] for t in trials}) == 3 * n, "every parameter set is distinct"
    assert len({t.user_attrs["worker"] for t in trials}) == n
    assert sorted(p.name for p in runs_dir().iterdir() if p.name.startswith("pg-")) == \
        [f"pg-{i:03d}" for i in range(1, 3 * n + 1)]
    shown = postgres.url.replace(postgres.password, "***")
    assert all(f"study: {shown}" in err and postgres.password not in err for err in errs)
    for run in runs_dir().iterdir():  # no run folder holds the password
        for path in run.rglob("*"):
            assert not path.is_file() or postgres.password.encode() not in path.read_bytes(), path
