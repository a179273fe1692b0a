"""Ctrl-C, SIGTERM, SIGHUP (a closed terminal) and SIGUSR2 (a cluster's warning) for `lab train` / `lab resume`: finish the
step, save, stop cleanly, within seconds.

The handler is installed as the command starts, before the heavy imports, and never
raises inside them (a KeyboardInterrupt in the middle of importing numpy or torch leaves
confusing errors). While the run is being set up, a signal is noted and the set-up stops
at its next safe point (`raise_if_requested`). While training, the first signal lets the
current step finish, then the runner saves a checkpoint; a second one stops at once
(KeyboardInterrupt), except inside a `critical()` section such as a checkpoint write,
which always completes first.

A step may be long (a rollout of a million env steps, an evaluation of long games, a
generator's sampling), and a cluster's preemption waits only so long after its SIGTERM.
So every long loop asks `ctx.check_stop()` (`lab.run.context`), the one signal path: once
the first signal has waited `GRACE_S` seconds (`overdue`), the check raises
`lab.api.StopRequested` and the runner ends the run `interrupted` at its last consistent
state (`lab.run.session`). Work that ends within the grace ends as before, with a checkpoint
at this step.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# SIGUSR2: Slurm's warning before a time limit or a preemption (`--signal=USR2@90`, submitit's).
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)
# Seconds the first signal lets the work in progress run before `ctx.check_stop()` cuts it
# short. Most steps end well within it (then the run saves this step, and nothing is redone);
# it leaves most of the 10 s a stop promises for unwinding, the checkpoint write and the exit.
GRACE_S = 3.0


class SetupInterrupted(Exception):
    """A signal arrived before training started; nothing was trained."""


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.since = 0.0  # time.monotonic() of the first signal
        self.training = False  # False: still setting up
        self.done = False  # True: the run has been saved and reported; only leaving is left
        self._previous: dict[int, Any] = {}
        self._critical = 0
        self._hard_stop = False
        self.embedded = False

    def install(self, embedded: bool = False) -> StopRequest:
        """Start a command: forget earlier signals and handle SIGINT/SIGTERM/SIGHUP/SIGUSR2 from now on.

        embedded: the lab runs inside someone else's process (`lab.train` in a notebook):
        a signal that would end a `lab` process (a second one during set-up, one after the
        run was saved) raises KeyboardInterrupt there instead."""
        self.signum, self.training, self._critical, self._hard_stop = None, False, 0, False
        self.done, self.embedded = False, embedded
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def exit_on_signal(self, code: int) -> None:
        """The command is over and the process is leaving: a late Ctrl-C no longer matters.

        SIGINT is ignored rather than handled in Python: the interpreter puts every Python
        handler back to the default while it shuts down, so a Ctrl-C landing then would kill
        the process with SIGINT although the run was already saved and reported. A late
        SIGTERM still ends the process at once, with the run's exit code.
        """
        def leave(signum: int, frame: object) -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, leave)
        signal.signal(signal.SIGHUP, leave)
        signal.signal(signal.SIGUSR2, leave)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def overdue(self) -> bool:
        """A stop was requested at least GRACE_S seconds ago: the work in progress stops now."""
        return self.signum is not None and time.monotonic() - self.since >= GRACE_S

    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def _say(self, text: str) -> None:
        print(f"\n{text}", file=sys.stderr, flush=True)

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.embedded and (self.done or (self.signum is not None and not self.training and not self._critical)):
            raise KeyboardInterrupt
        if self.done:  # the run is saved and reported: leave now, with the run's exit code
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.exit_code() if self.signum is not None else 128 + signum)
        if self.signum is None:
            self.signum, self.since = signum, time.monotonic()
            if self.training:
                self._say(f"{name}: finishing this step, then saving a checkpoint; work still running in "
                          f"{GRACE_S:g} s stops there (send again to stop at once)")
            return
        if self._critical:
            self._hard_stop = True
            self._say(f"{name}: still saving; stopping as soon as the files are complete")
        elif self.training:
            raise KeyboardInterrupt
        else:
            self._say(f"{name}: stopped during set-up")
            os._exit(self.exit_code())

    def raise_if_requested(self) -> None:
        """Call at safe points of the set-up: stop there if a signal came."""
        if self.signum is not None and not self.training:
            raise SetupInterrupted(signal.Signals(self.signum).name)

    @contextmanager
    def critical(self, then_stop: bool = True) -> Iterator[None]:
        """A section a second signal must not cut short (checkpoint and summary writes).

        A second signal that came meanwhile stops the run right after it (then_stop), or is
        simply absorbed when the section is the run's own ending.
        """
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self._hard_stop:
            self._hard_stop = False
            if then_stop:
                raise KeyboardInterrupt


# One per process: the CLI installs it for train/resume; the runner consults it.
STOP = StopRequest()


SUPERVISOR = "LAB_SUPERVISOR"  # the pid of the `--seeds` / `lab sweep` process that started this run


def signals_reach_every_process() -> bool:
    """Inside a Slurm job, a requeue, a preemption, a time limit or scancel signals every
    process of the job, so a parent passing the signal on to its runs would deliver it twice
    (and a second signal stops a run at once, without saving its step)."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def stop_when_orphaned() -> None:
    """A run started by `--seeds` or `lab sweep` lives in a session of its own (Ctrl-C reaches
    it only through its parent), so a parent that dies (kill -9, the OOM killer, a closed
    terminal) would leave it running unseen: when the parent is gone, this process sends
    itself SIGTERM, which saves a checkpoint and ends the run `interrupted`, for a re-run of
    the command to resume."""
    import threading
    import time

    supervisor = os.environ.pop(SUPERVISOR, None)
    if not supervisor or not supervisor.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(supervisor):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lab-orphan-watch", daemon=True).start()


@contextmanager
def handling_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM handled as `lab train` handles them, for the block (Python's own
    handlers come back afterwards); from threads other than the main one, nothing changes."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.install(embedded=True)
    try:
        yield
    finally:
        STOP.uninstall()
