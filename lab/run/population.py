"""`lab train ALGO --seeds 1-8 --vectorize`: the seeds' runs trained in one process, as a population.

Every member is an ordinary run: its own run directory, config.yaml (its seed), metrics,
checkpoints, summary and tracker runs, made and resumed by the entry points of `lab train`
and `lab resume` (`lab.run.entry`). Each member's session runs its own loop
(`Session.training`): rows, evaluations and checkpoints at the steps a separate run has them.
This module drives those loops in lockstep and takes each training step for all the members
at once (`lab.rl.population.Population`, or the family's own: `lab.rl.q_population`). A
member whose loop ends early (diverged) leaves the population, which restacks without it,
and the others go on. A stop signal ends every member at the same step, each with its
checkpoint, so the same command run again resumes them all together; `lab resume`
continues any one of them alone.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lab import distributed
from lab.api import LabError, RunStatus
from lab.memory import check_fits
from lab.rl.population import check_stackable, population_type
from lab.run.discovery import Lab
from lab.run.entry import Opened, open_new, open_resumed
from lab.run.rundir import read_summary
from lab.run.session import PROCESS_THREADS
from lab.signals import STOP


@dataclass(frozen=True)
class Member:
    """One run of the population: `settings` of a new run (its `lab train` settings, seed and
    name included), or None to resume the run at `run_dir`."""

    run_dir: Path
    settings: dict[str, Any] | None


def train_population(lab: Lab, algo_name: str, members: Sequence[Member],
                     file_values: dict[str, Any] | None = None) -> dict[Path, int]:
    """Train `members` as one population; each run's exit code (as `lab train` would exit)."""
    algo_cls = lab.registry.algorithm(algo_name)
    check_stackable(algo_cls)
    family = population_type(algo_cls)
    if distributed.launched():
        raise LabError("--vectorize trains its members in one process: run it without torchrun")
    opened: list[tuple[Opened, bool]] = []
    try:
        for member in members:
            run = open_new(lab, algo_name, member.settings, file_values) if member.settings is not None \
                else open_resumed(lab, member.run_dir)
            if run is None:  # a signal during set-up: nothing trained
                _abandon(opened)
                return {}
            opened.append((run, member.settings is not None))
            if len(opened) == 1:  # before the others are built: can it be stacked, will they all fit?
                agent = run.session.algo
                family.check_member(agent)
                check_fits(f"a population of {len(members)} members", len(members) * family.member_bytes(agent),
                           run.session.device, "train fewer seeds in one process (--vectorize --parallel P splits "
                           "them over P processes) or make each smaller (--num-envs, --n-steps, --buffer-size)")
        _check_in_step([run for run, _ in opened])
        for run, fresh in opened:
            if fresh:
                print(f"run: {run.run_dir}", file=sys.stderr)
        first = opened[0][0].session
        cpu = first.device.type == "cpu"
        population = family([run.session.algo for run, _ in opened],
                            update_threads=(first.run.threads or PROCESS_THREADS) if cpu else 1)
    except BaseException:
        _abandon(opened)
        raise
    try:
        return drive(population, [run for run, _ in opened])
    finally:
        for run, _ in opened:
            run.release()


def _check_in_step(runs: list[Opened]) -> None:
    """The members must train to one target (those behind the others catch up first: `drive`)."""
    if len({run.target for run in runs}) > 1:
        where = ", ".join(f"{run.run_dir.name} to step {run.target:,}" for run in runs)
        raise LabError(f"a population trains its members to one budget, but {where}: give them one with "
                       "`lab resume RUN --steps N` each (or drop --vectorize)")


def _abandon(opened: list[tuple[Opened, bool]]) -> None:
    """Set-up failed: close what was opened, and remove the run folders it made."""
    for run, fresh in opened:
        session = run.session
        session.tracker.finish({"status": RunStatus.FAILED.value} if fresh else read_summary(run.run_dir))
        session.close()
        run.release()
        if fresh:
            shutil.rmtree(run.run_dir, ignore_errors=True)


Loop = Generator[None, dict[str, Any] | None, int]


class Lockstep:
    """The members' loops (`Session.training`), which end one by one: each run's exit code
    once its loop ended, and the first LabError a loop passed on after ending its run."""

    def __init__(self, runs: list[Opened]) -> None:
        self.codes: dict[Path, int] = {}
        self.raised: BaseException | None = None
        self.stopping = False  # what every member's loop sees this round when it asks whether to stop
        self.live: list[tuple[Opened, Loop]] = []
        for run in runs:
            run.session.stop_requested = lambda: self.stopping
            loop = run.session.training(run.target)
            if self._advance(run, loop, lambda loop: next(loop)):
                self.live.append((run, loop))

    def send(self, outcome: Sequence[dict[str, Any] | BaseException | None] | BaseException,
             only: Sequence[int] | None = None) -> list[int]:
        """Each live loop's step outcome (metrics, None to stop at this step, or the exception
        the step raised), to every loop or `only` those at these positions (the others wait);
        the positions of the loops that go on."""
        def delivered(k: int) -> Callable[[Loop], Any]:
            mine = outcome if isinstance(outcome, BaseException) else outcome[k]
            if isinstance(mine, BaseException):
                return lambda loop: loop.throw(mine)
            return lambda loop: loop.send(mine)

        staying = [k for k, (run, loop) in enumerate(self.live)
                   if (only is not None and k not in only) or self._advance(run, loop, delivered(k))]
        self.live = [self.live[k] for k in staying]
        return staying

    def _advance(self, run: Opened, loop: Loop, deliver: Callable[[Loop], Any]) -> bool:
        try:
            deliver(loop)
            return True
        except StopIteration as end:
            self.codes[run.run_dir] = int(end.value)
        except BaseException as exc:
            self.codes[run.run_dir] = 2 if isinstance(exc, LabError) else 1
            self.raised = self.raised or exc
        return False


def _own_step(run: Opened) -> dict[str, Any] | BaseException:
    """One training step of a member alone, as its separate run takes it (its tensors are
    views of the population's, so the population sees what it learned)."""
    try:
        return cast(dict[str, Any], run.session.algo.train_step())
    except BaseException as exc:
        return exc


def drive(population: Any, runs: list[Opened]) -> dict[Path, int]:
    """The members' loops in lockstep, each training step `population.train_step()`; an
    exception that step raises (a stop inside it) is raised inside every member's loop, which
    ends its run as a separate run would end. Stop signals are decided here, for all members at
    once: every member stops at the same step, so the population can continue together. A
    member whose checkpoint is older than the others' (a kill -9 between the members' saves of
    one step) first catches up alone, its own `train_step` while the others wait.
    Returns each run's exit code."""
    members = Lockstep(runs)
    if len(members.live) < len(runs):
        population.restack([i for i, run in enumerate(runs) if run.run_dir not in members.codes])
    steps = [run.session.algo.global_step for run, _ in members.live]
    for run, _ in members.live:
        if run.session.algo.global_step < max(steps):
            print(f"{run.run_dir.name}: its checkpoint is from step {run.session.algo.global_step:,}, the others' "
                  f"from {max(steps):,}; it catches up alone, then trains with them", file=sys.stderr)
    while members.live:
        outcome: Sequence[dict[str, Any] | BaseException | None] | BaseException
        steps = [run.session.algo.global_step for run, _ in members.live]
        behind = [k for k, step in enumerate(steps) if step < max(steps)]
        if behind and not STOP.requested:  # killed between the members' checkpoints of one step
            before = len(members.live)
            staying = members.send([_own_step(members.live[k][0]) if k in behind else None
                                    for k in range(before)], only=behind)
            if members.live and len(staying) < before:
                population.restack(staying)
            continue
        if STOP.requested:  # stop every member here, at the end of the step they all took
            outcome = [None] * len(members.live)
        else:
            try:
                outcome = population.train_step()
            except BaseException as exc:  # each member's loop ends its run as it would have alone
                outcome = exc
        members.stopping = STOP.requested
        before = len(members.live)
        staying = members.send(outcome)
        if members.live and len(staying) < before:
            population.restack(staying)
    if members.raised is not None:
        raise members.raised
    return members.codes
