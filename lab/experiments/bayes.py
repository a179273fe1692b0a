"""A bayes trial's pruning: its own process reports each evaluation to the sweep's study.

W&B's `early_terminate: {type: hyperband, min_iter, eta[, max_iter]}` becomes Optuna's
HyperbandPruner (`lab.experiments.study.pruner`): each trial reports its metric at every
evaluation (`TrialPruner`, an observer of the trial's own run, attached by the CLI) and
stops cleanly when the pruner says so: a checkpoint, summary status `pruned`, shown as
such in the ranked table and `lab runs`. The worker names the study in the trial's
environment (the storage without its password, which travels as `LAB_STORAGE_PASSWORD`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from lab.api import RunStatus
from lab.api.errors import one_line
from lab.experiments.storage import Storage
from lab.experiments.study import pruner
from lab.run.events import Observer, StopRun

# The environment a trial's `lab train` process reads to report to its study.
STORAGE_VAR, STUDY_VAR, TRIAL_VAR, METRIC_VAR, PRUNER_VAR = (
    "LAB_OPTUNA_STORAGE", "LAB_OPTUNA_STUDY", "LAB_OPTUNA_TRIAL", "LAB_OPTUNA_METRIC", "LAB_OPTUNA_PRUNER")


def trial_environment(storage: Storage, study_name: str, trial_id: int, metric: str | None, early: Any) -> dict[str, str]:
    """What a bayes trial's process needs to find its trial (`TrialPruner.from_environment`)."""
    return {STORAGE_VAR: storage.without_password, STUDY_VAR: study_name, TRIAL_VAR: str(trial_id),
            METRIC_VAR: metric or "", PRUNER_VAR: json.dumps(early), **storage.environment()}


class TrialPruner(Observer):
    """A trial's own process, watching its run: each evaluation's value goes to the study, and
    when the study's pruner says so the run stops as `pruned` (its checkpoint is saved)."""

    def __init__(self, storage: str, study_name: str, trial_id: int, metric: str | None, early: Any) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.load_study(study_name=study_name, storage=Storage.parse(storage).open(), pruner=pruner(early))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.metric = metric
        self.reports = 0

    @classmethod
    def from_environment(cls) -> TrialPruner | None:
        """The pruner of the trial this process runs, as `run_bayes` named it in the process's
        environment; None outside a bayes trial (or, with a warning, when the study is unreachable)."""
        if not os.environ.get(TRIAL_VAR):
            return None
        try:
            return cls(os.environ[STORAGE_VAR], os.environ[STUDY_VAR], int(os.environ[TRIAL_VAR]),
                       os.environ.get(METRIC_VAR) or None, json.loads(os.environ.get(PRUNER_VAR) or "null"))
        except Exception as exc:  # the trial still trains; it only cannot be pruned
            print("warning: " + one_line(f"cannot report to the sweep's study ({type(exc).__name__}: {exc}); "
                                         "this trial will not be pruned"), file=sys.stderr)
            return None

    def evaluated(self, step: int, metrics: dict[str, Any], key_metric: str) -> None:
        value = metrics.get(self.metric or key_metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        self.reports += 1
        self.trial.report(float(value), self.reports)
        if self.trial.should_prune():
            raise StopRun(RunStatus.PRUNED, f"pruned by the sweep's pruner at step {step:,}\n")
