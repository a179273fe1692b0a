"""The loop every algorithm shares: train, log, evaluate, checkpoint, and end consistently.

A `Session` is one process's life of a run: it builds the context and the algorithm, runs
the loop and always leaves a consistent run directory behind (summary.json says how it
ended). What happened reaches everything that watches the run as events (`lab.run.events`):
trackers, the progress display, the divergence guard and any observer the caller adds (a
sweep's pruner). The entry points that make sessions (`lab train`, `lab resume`, `lab eval`,
`lab.load`, `lab.train`) are in `lab.run.entry`.

Exact resume: a checkpoint holds, besides the algorithm's state, every random stream of
the run (`lab.seeding`), the training envs (`lab.api.TrainingEnv`), the schedule
horizon (`ctx.total_steps`) and the loop's bookkeeping (`lab.run.loop_state`), so a run
stopped and resumed logs what the same run left alone logs, step for step, wherever the
envs can be saved.

Under torchrun (`lab.distributed`, docs/scale.md) every process runs a Session in lockstep:
rank 0 alone writes the run directory, logs and prints; the others train their share. A
stop signal on any rank stops them all at the same step, and checkpoints gather each rank's
envs and random streams.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lab import distributed
from lab.api import Algorithm, LabError, RunInfo, RunStatus, StopRequested, jsonable
from lab.device import resolve_device, resolve_precision, training_threads
from lab.files import FileFault
from lab.run.checkpoint import CheckpointWriter, checkpoint_step, load_algorithm_state, restart_note, saved_horizon
from lab.run.context import RunContext
from lab.run.discovery import Lab
from lab.run.events import Observer, Observers, StopRun
from lab.run.guard import DivergenceGuard
from lab.run.loop_state import Cadence, LoopState
from lab.run.progress import ProgressDisplay
from lab.run.rundir import write_summary
from lab.run.settings import Resolved
from lab.run.trackers import EpisodeLog, MultiTracker, Tracking
from lab.seeding import derive_seed, seed_everything
from lab.signals import STOP

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Torch's thread count as this process found it. Every session starts from it, so building the
# networks (orthogonal init runs LAPACK, whose results depend on the thread count) gives the
# same weights in a fresh `lab train` process and in a script that ran other sessions before.
PROCESS_THREADS = torch.get_num_threads()
CHECKPOINT_FORMAT = 2


class Session:
    """Build everything a run needs in this process, train, and close cleanly."""

    def __init__(self, lab: Lab, algo_cls: type[Algorithm], resolved: Resolved, run_dir: Path, *, fresh: bool,
                 purpose: str = "train", total_steps: int = 0, observers: Sequence[Observer] = (),
                 run_loader: Callable[[Path, str, torch.device], Any] | None = None) -> None:
        self.lab, self.algo_cls, self.resolved, self.run, self.run_dir = lab, algo_cls, resolved, resolved.run, run_dir
        self.checkpoints = CheckpointWriter(run_dir)
        self.purpose = purpose
        self.fresh = fresh  # a new run: it has no checkpoint yet
        # how a stop inside the section running now is saved (None: inside a step, not at all)
        self._on_stop: Callable[[], None] | None = None
        # only training runs on several processes; `lab eval` and `lab.load` are one process
        rank, world = (distributed.rank(), distributed.world_size()) if purpose == "train" else (0, 1)
        self.main = rank == 0
        if world > 1 and not algo_cls.data_parallel:
            raise LabError(f"{algo_cls.name} cannot train on several processes yet (it does not average its "
                           f"gradients across them); run it without torchrun")
        self.device = resolve_device(self.run.device)
        if world > 1:
            self.device = distributed.device_for(self.device)
        seed_everything(self.run.seed)
        torch.set_num_threads(PROCESS_THREADS)
        self.tracker = MultiTracker([], on_log=self._on_log, guard=STOP.critical)
        self.ctx = RunContext(
            device=self.device, seed=self.run.seed, total_steps=total_steps, run_dir=run_dir,
            registry=lab.registry, tracker=self.tracker, env_id=self.run.env, data=self.run.data,
            data_dir=self.run.resolved_data_dir, eval_episodes=self.run.eval_episodes, training=purpose == "train",
            rank=rank, world_size=world, compile_setting=self.run.compile,
            precision=resolve_precision(self.run.precision, algo_cls.supports_bf16, self.device),
            env_options=resolved.env_option_values(), run_loader=run_loader,
        )
        try:
            self.algo = algo_cls(resolved.algo, self.ctx)
        except BaseException:
            self.ctx.close_envs()
            if fresh and self.main:  # nothing of the user's is in a run directory we just made
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if rank > 0:  # the same weights everywhere, but each rank its own dropout and other draws
            seed_everything(derive_seed(self.run.seed, "global", rank) % 2**32)
        # for training; the networks were built on PROCESS_THREADS
        self.cores = training_threads(self.run.threads, self.algo.cpu_threads, self.device)
        if self.run.epochs is not None and fresh:
            if not self.algo.steps_per_epoch:
                self.close()
                raise LabError(f"--epochs needs {algo_cls.name}.steps_per_epoch (the steps in one pass over its "
                               "data), which it does not define; give its budget with --steps")
            self.ctx.total_steps = self.run.epochs * self.algo.steps_per_epoch
        self.loop = LoopState()
        # whether to stop at this step's end; several processes stop together (a signal to any
        # of them stops all at this step); a population's driver decides for all its members
        self.stop_requested: Callable[[], bool] = lambda: distributed.any_flag(STOP.requested)
        self.started = time.time()
        self.episodes = EpisodeLog(self.tracker, world)
        guard = DivergenceGuard(run_dir, getattr(resolved.algo, "learning_rate", None), lambda: checkpoint_step(run_dir))
        self.observers = Observers([guard, *observers])

    def start(self, doc: dict[str, Any], resumed: bool) -> None:
        """Start the trackers (rank 0) and tell the observers the run has started."""
        info = RunInfo(
            name=self.run_dir.name, run_dir=self.run_dir, algo=self.algo_cls.name, kind=str(self.algo_cls.kind),
            env=self.run.env, data=self.run.data, seed=self.run.seed,
            experiment=self.run.experiment or f"{self.algo_cls.name}-{self.run.env or self.run.data}",
            config=doc, resumed=resumed, purpose=self.purpose, time_offset=self.loop.trained_before,
            start_step=self.algo.global_step, trackers=self.run.trackers,
            tracker_options=dict(self.resolved.tracker_options),
        )
        self.tracker.start(self.lab, info)
        self.observers.add(Tracking(self.tracker, self.lab, info))
        self.observers.started(info)

    def _on_log(self, metrics: dict[str, Any], step: int) -> None:
        values = {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        self.loop.last_values.update(values)
        self.observers.logged(values, step)

    # -- checkpoints --

    def checkpoint_state(self, algorithm_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """What latest.pt holds. Several processes: rank 0's state, plus every rank's envs and
        random streams under "ranks" (all ranks call this together; only rank 0's is written)."""
        state = {
            "format": CHECKPOINT_FORMAT, "algo": self.algo_cls.name, "global_step": self.algo.global_step,
            "algorithm": self.algo.state_dict() if algorithm_state is None else algorithm_state,
            "envs": self.ctx.env_states(), "rng": self.ctx.rng.state_dict(), "world_size": self.ctx.world_size,
            # the key metric named beside its best: a summary.json rebuilt from the checkpoint names it too
            "runner": {**self.loop.state_dict(self.elapsed(), self.ctx.total_steps),
                       "key_metric": self.algo_cls.key_metric},
        }
        if self.ctx.world_size > 1:
            state["ranks"] = distributed.gather_object(distributed.to_cpu({"envs": state["envs"], "rng": state["rng"]}))
        return state

    def save(self, best: bool = False, algorithm_state: dict[str, Any] | None = None, announce: bool = True) -> None:
        """Write latest.pt (and best.pt); a second Ctrl-C waits until the files are complete.
        Weights that are no longer finite are never written: the guard ends the run first.
        announce=False: the observers hear nothing (the first checkpoint, of the untrained state)."""
        self.episodes.flush()  # several processes: what the envs finished belongs before the checkpoint
        with STOP.critical():
            state = self.checkpoint_state(algorithm_state)
            if announce:
                self.observers.state(self.algo.global_step, state["algorithm"])
            if not self.main:
                return
            path = self.checkpoints.write(state, best)
        if announce:
            self.observers.checkpointed(self.algo.global_step, path)

    @contextmanager
    def saved_on_stop(self, save: Callable[[], None]) -> Iterator[None]:
        """A section that leaves the training state whole (an evaluation, media): a stop that
        cuts it short (`StopRequested`) is saved with `save`, at this step. No `finally`: the
        run's end (`train`) reads how to save it after the exception left the section."""
        outer, self._on_stop = self._on_stop, save
        yield
        self._on_stop = outer

    def restore(self, state: dict[str, Any], rng: bool = True) -> None:
        """Continue from a checkpoint: the algorithm, the envs, the loop's bookkeeping and (with
        `rng`) the random streams; on another number of processes, what can continue does."""
        if self.purpose == "train":  # the replay's chunk files (an evaluation acts without a replay)
            state = self.checkpoints.read_chunks(state)
        saved_algo = state.get("algo")
        if saved_algo is not None and saved_algo != self.algo_cls.name:
            raise LabError(f"the checkpoint was written by {saved_algo}, but {self.run_dir}/config.yaml says "
                           f"{self.algo_cls.name}: put back the run's own checkpoints/ (or config.yaml)")
        step = int(state["global_step"])
        saved_world, world = int(state.get("world_size", 1)), self.ctx.world_size
        mine = state["ranks"][self.ctx.rank] if world > 1 and saved_world == world else state
        self.ctx.total_steps = saved_horizon(state, self.ctx.total_steps)
        # another number of processes: the saved envs and streams belonged to other ranks
        restarted = self.ctx.load_env_states(mine.get("envs") if saved_world == world else None, step)
        load_algorithm_state(self.algo, state["algorithm"], self.run_dir)
        self.algo.global_step = step
        self.loop = LoopState.from_state(state.get("runner", {}), step)
        if rng and saved_world != world:
            self.ctx.rng.restart(step)
        elif rng:
            self.ctx.rng.load_state_dict(mine["rng"] if "streams" in mine["rng"] else {"global": mine["rng"]})
        if self.purpose == "train" and self.main and (saved_world != world or restarted):
            print(restart_note(self.run.env, saved_world, world, bool(restarted)), file=sys.stderr)

    def elapsed(self) -> float:
        return self.loop.trained_before + time.time() - self.started

    # -- evaluation, media, episodes, rows --

    def evaluation(self) -> dict[str, Any]:
        """The algorithm's evaluation at this step, in the evaluation's own random streams
        (training draws are untouched), logged; under torchrun, where the algorithm
        evaluates on rank 0 alone, the other ranks log nothing."""
        step = self.algo.global_step
        metrics: dict[str, Any] = {}
        if self.main or self.algo_cls.evaluates_on_every_rank:
            with self.ctx.rng.evaluation(step):
                metrics = {k: jsonable(v) for k, v in self.algo.evaluate().items()}
        self.tracker.log(metrics, step)
        return metrics

    def evaluate(self) -> dict[str, Any]:
        """Evaluate, log, keep the best, checkpoint (best.pt when the key metric improved).
        Non-finite weights are not evaluated: their score would become `best`."""
        self.episodes.flush()  # (several processes) the episodes up to this step come first
        step, key = self.algo.global_step, self.algo_cls.key_metric
        state = self.algo.state_dict()  # evaluating changes none of it: the checkpoint below reuses it
        self.observers.state(step, state)
        # a stop inside the evaluation saves this step with the evaluation still due: a resume redoes it
        self.loop.evaluation_due = True
        with self.saved_on_stop(lambda: self.save(algorithm_state=state)):
            metrics = self.evaluation()
        self.loop.evaluation_due = False
        improved = self.loop.offer(metrics.get(key), self.algo_cls.key_metric_mode, step)
        self.loop.last_eval_step = step
        if self.algo_cls.media_each_evaluation and self.run.video and self.main:
            with self.saved_on_stop(lambda: self.save(best=improved, algorithm_state=state)):
                self.log_media()
        self.save(best=improved, algorithm_state=state)
        self.observers.evaluated(step, metrics, key)
        return metrics

    def log_media(self) -> dict[str, Path]:
        """Write the algorithm's media for this step (in the evaluation's random streams) and
        pass the files to the trackers; returns {key: path}."""
        step = self.algo.global_step
        with self.ctx.rng.evaluation(step):
            media = self.algo.write_media(self.ctx.media_dir)
        self.observers.media(step, media)
        return media

    def log_row(self, step: int, seconds: float) -> None:
        self.episodes.flush()
        row = self.loop.row()
        row["perf/sps"] = (step - self.loop.last_log_step) / max(seconds, 1e-9)
        self.tracker.log(row, step)
        self.loop.last_log_step = step
        self.observers.row(step, row)

    # -- the loop --

    def train_step(self) -> Generator[None, dict[str, Any] | None, float | None]:
        """One training step, which the driver of `training` takes (the algorithm's `train_step`,
        or a population's step of all its members) and sends in as its metrics; they are kept
        for the next row and its episodes logged. Returns the seconds spent compiling in it
        (start-up, not training: kept out of perf/sps), or None when the driver sent None
        instead: it stops the run here, at a step's end (a population's members all at once)."""
        before = self.algo.global_step
        if self.cores is not None:
            self.cores.adjust()
        self.ctx.in_step = True  # (several processes) the checks every process makes alike
        try:
            metrics = yield
        finally:
            self.ctx.in_step = False
        if metrics is None:
            return None
        for name, value in metrics.items():
            self.loop.pending[name].append(value)
        compiling = self.note_compiling()
        step = self.algo.global_step
        if step <= before:
            raise RuntimeError(f"{self.algo_cls.name}.train_step() did not advance global_step")
        self.episodes.add(step, self.ctx.pop_episodes())
        return compiling

    def note_compiling(self) -> float:
        """Seconds torch.compile took since the last call, logged as `perf/compile_s`."""
        seconds = self.ctx.pop_compile_seconds()
        if seconds:
            self.loop.pending["perf/compile_s"].append(seconds)
        return seconds

    def train(self, target: int) -> int:
        """Train until `target` steps, a stop signal or an observer's `StopRun`, each step the
        algorithm's own `train_step`; returns the process exit code."""
        return drive(self.training(target), self.algo.train_step)

    def training(self, target: int) -> Generator[None, dict[str, Any] | None, int]:
        """`train` as a generator that yields where it needs a training step and takes the
        step's metrics (or the exception the step raised) from its driver: `drive` does each
        step with the algorithm's `train_step`; a population (`lab.run.population`) drives
        its members' sessions in lockstep with one step of all of them. Returns the exit code.

        A stop signal ends the run `interrupted` with a checkpoint at its last consistent state:
        at a step's end, this step; inside an evaluation or media (`saved_on_stop`), this step too,
        with the evaluation still due; inside a step (`StopRequested` from `ctx.check_stop`),
        nothing of the half-made step is saved and latest.pt stays the last checkpoint, which a
        fresh run writes as it starts (step 0), so there always is one to resume."""
        algo = self.algo
        cadence = Cadence.of(self.run, algo.steps_per_epoch, target)
        if self.main:
            self.observers.add(ProgressDisplay(
                self.algo_cls.name, self.run.env or self.run.data, self.run_dir, self.algo_cls.next_command(self.run_dir),
                target, algo.global_step, self.algo_cls.key_metric))
        status, exit_code, message = RunStatus.FINISHED, EXIT_OK, None
        STOP.training = True
        try:
            resume_from: Callable[[], None] | None = self.save
            try:
                stopped = yield from self.run_loop(target, cadence)
            except StopRequested:  # a check inside a step, an evaluation or media cut it short
                stopped, resume_from = True, self._on_stop
                if resume_from is None and self.main:
                    message = (f"note: the stop came inside the training step after step {algo.global_step:,}, "
                               "so nothing of that step is saved (a checkpoint holds whole steps only)")
            if stopped:
                status, exit_code = RunStatus.INTERRUPTED, STOP.exit_code()
            if resume_from is not None:
                resume_from()
        except KeyboardInterrupt:
            status, exit_code = RunStatus.INTERRUPTED, 128 + signal.SIGINT
        except StopRun as stopped_by:  # the guard or a sweep's pruner
            status, message = stopped_by.status, stopped_by.message
            exit_code = EXIT_OK if status == RunStatus.PRUNED else EXIT_FAILED
        except LabError:
            status, exit_code = RunStatus.FAILED, EXIT_USAGE
            raise
        except Exception:
            status, exit_code, message = RunStatus.FAILED, EXIT_FAILED, traceback.format_exc()
        finally:
            with STOP.critical(then_stop=False):
                self.finish(status, target, message)
            STOP.done = True  # saved and reported: a late Ctrl-C now just ends the process
        return exit_code

    def run_loop(self, target: int, cadence: Cadence) -> Generator[None, dict[str, Any] | None, bool]:
        """The steps to `target` with their rows, evaluations and checkpoints, then the last
        evaluation and media; True when a stop signal ended it at a step's end."""
        algo = self.algo
        self._on_stop, self.loop.complete = None, False
        if self.fresh:  # a checkpoint from the first moment: a stop inside the first step resumes from step 0
            self.save(announce=False)
            self.fresh = False
        if self.loop.evaluation_due and algo.global_step < target:
            self.evaluate()  # a stop cut the evaluation at this step short: it comes first
        log_clock, side_time = time.perf_counter(), 0.0  # side: evaluating/checkpointing since the last row
        stop = False
        while algo.global_step < target and not (stop := self.stop_requested()):
            before = algo.global_step
            compiling = yield from self.train_step()
            if compiling is None:  # the driver stopped the run at this step's end
                stop = True
                break
            side_time += compiling
            step = algo.global_step
            if cadence.logs(before, step) or step >= target:
                now = time.perf_counter()
                self.log_row(step, now - log_clock - side_time)
                log_clock, side_time = now, 0.0
            if cadence.evaluates(before, step) or cadence.checkpoints(before, step):
                side_start = time.perf_counter()
                self.evaluate() if cadence.evaluates(before, step) else self.save()
                side_time += time.perf_counter() - side_start
                self.note_compiling()  # a new batch shape compiled meanwhile: already side time
            self.observers.stepped(step, algo.pace())
        if stop or self.stop_requested():
            return True
        if self.loop.last_eval_step != algo.global_step:
            self.evaluate()
        if self.run.video and not self.algo_cls.media_each_evaluation and self.main:
            with self.saved_on_stop(self.save):
                self.log_media()  # (otherwise the last evaluation wrote it)
        self.loop.complete = True
        return False

    def finish(self, status: RunStatus, target: int, message: str | None) -> None:
        """summary.json (rank 0), the observers' `ended`, and every env closed."""
        if not self.main:  # rank 0 writes and reports for every process
            if message:
                print(message, file=sys.stderr, end="")
            self.close()
            return
        summary = {
            **{k: jsonable(v) for k, v in self.loop.last_values.items()},
            "status": status.value, "global_step": self.algo.global_step, "target_steps": target,
            "elapsed_s": round(self.elapsed(), 3), "key_metric": self.algo_cls.key_metric,
            "best": self.loop.best, "best_step": self.loop.best_step,
        }
        try:
            write_summary(self.run_dir, summary)
        except FileFault as exc:  # a full or read-only disk: the checkpoints already say where the run is
            print(f"warning: {exc}; `lab runs` rebuilds it from metrics.jsonl and the checkpoint", file=sys.stderr)
        try:
            self.observers.ended(status, summary, message)
        finally:
            self.close()

    def close(self) -> None:
        self.algo.close()
        self.ctx.close_envs()


def drive(training: Generator[None, dict[str, Any] | None, int], step: Callable[[], dict[str, Any]]) -> int:
    """Run a session's `training`, doing each step it asks for with `step()`; an exception
    the step raises is raised inside `training`, where the step was. Returns its exit code."""
    try:
        next(training)
        while True:
            try:
                metrics = step()
            except BaseException as exc:  # the session ends the run as it would have
                training.throw(exc)
            else:
                training.send(metrics)
    except StopIteration as end:
        return int(end.value)
