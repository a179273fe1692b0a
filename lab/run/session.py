"""The loop every algorithm shares: logging, evaluation, checkpoints, signals and summary.

A `Session` is one process's life of a run: it builds the context, the algorithm and the
trackers, runs the loop and always leaves a consistent run directory behind (summary.json
says how it ended). The entry points that make sessions (`lab train`, `lab resume`, `lab
eval`, `lab.load`, `lab.train`) are in `lab.run.entry`.

Exact resume: a checkpoint holds, besides the algorithm's state, every random stream of
the run (`lab.run.seeding`), the training envs (`lab.vecenv.TrainingEnv`), the schedule
horizon (`ctx.total_steps`) and the loop's own bookkeeping (metrics averaged since the
last log row, the last evaluation, the best value), so a run stopped and resumed logs what
the same run left alone logs, step for step, wherever the envs can be saved.

Under torchrun (`lab.distributed`, README: Several processes) every process runs a Session
in lockstep: rank 0 alone makes the run directory, logs, writes checkpoints and the summary
and prints; the others train their share. A stop signal on any rank stops them all at the
same step, and checkpoints gather each rank's envs and random streams.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from lab import distributed
from lab.algorithm import Algorithm
from lab.device import SharedCores, resolve_device, resolve_precision
from lab.errors import LabError, unknown
from lab.run.checkpoint import save_checkpoint
from lab.run.chunks import FOLDER as CHUNK_FOLDER, ChunkStore
from lab.run.context import Context
from lab.run.discovery import Lab
from lab.run.info import RunInfo
from lab.run.progress import RunProgress, run_report
from lab.run.rundir import write_summary
from lab.run.seeding import derive_seed, seed_everything
from lab.run.settings import Resolved
from lab.run.signals import STOP
from lab.tracking import MultiTracker, jsonable
from lab.vecenv import Episode

EXIT_OK, EXIT_FAILED = 0, 1
# metrics.jsonl is the run directory's own record (`lab runs`, `lab compare` and resume read it):
# it is written whatever --trackers names.
ALWAYS_TRACKERS = ("jsonl",)
# Torch's thread count as this process found it. Every session starts from it, so building the
# networks (orthogonal init runs LAPACK, whose results depend on the thread count) gives the
# same weights in a fresh `lab train` process and in a script that ran other sessions before.
PROCESS_THREADS = torch.get_num_threads()
CHECKPOINT_FORMAT = 2


def crossed(before: int, after: int, interval: int) -> bool:
    """True when (before, after] passed a multiple of `interval` (steps jump by num_envs)."""
    return after // interval > before // interval


def selected_trackers(lab: Lab, names: tuple[str, ...] | None) -> list[str]:
    """The registered trackers a run starts, in registration order: every one when `names` is
    None (each factory still decides, e.g. W&B disabled), else the named ones plus jsonl.
    An unknown name is a LabError listing the registered trackers."""
    registered = lab.registry.trackers
    if names is None:
        return list(registered)
    for name in names:
        if name not in registered:
            raise unknown("tracker", name, registered,
                          f"--trackers takes names from: {', '.join(registered)} (`lab plugins` lists them)")
    return [name for name in registered if name in names or name in ALWAYS_TRACKERS]


def intervals(algo: Algorithm, resolved: Resolved, total: int) -> tuple[int, int, int]:
    """(log, eval, checkpoint) intervals in steps."""
    run, per_epoch = resolved.run, algo.steps_per_epoch
    if per_epoch:
        log_default, eval_default = max(1, per_epoch // 10), per_epoch
    else:
        log_default, eval_default = max(1, min(1000, total // 100)), max(1, total // 10)
    eval_every = run.eval_interval or eval_default
    return run.log_interval or log_default, eval_every, run.checkpoint_interval or eval_every


class Diverged(Exception):
    """Training produced a non-finite loss or parameter: the run stops, nothing non-finite is saved."""


class Pruned(Exception):
    """A bayes sweep's pruner stopped this trial (after its checkpoint was saved)."""


def non_finite_loss(row: dict[str, Any]) -> str | None:
    """The first loss in a log row that is NaN or infinite ("train/loss is nan"), else None."""
    for name, value in row.items():
        if "loss" in name.rsplit("/", 1)[-1] and isinstance(value, float) and not math.isfinite(value):
            return f"{name} is {value}"
    return None


def non_finite_tensor(state: Any, where: str = "") -> str | None:
    """The first floating tensor of `state` (nested dicts and lists, replay contents under
    "buffers" left out) with a NaN or infinite entry, as "q.0.weight has nan", else None.
    One host sync per device for the whole state, so a CUDA run pays it only at checkpoints."""
    tensors: list[tuple[str, torch.Tensor]] = []

    def collect(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.numel():
                tensors.append((path, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "buffers":
                    collect(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                collect(item, f"{path}.{i}")

    collect(state, where)
    if not tensors:
        return None
    finite = [t.isfinite().all() for _, t in tensors]
    by_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for flag in finite:
        by_device[flag.device].append(flag)
    if all(bool(torch.stack(flags).all()) for flags in by_device.values()):
        return None
    path, tensor = next((path, t) for (path, t), ok in zip(tensors, finite) if not bool(ok))
    kind = "nan" if bool(tensor.isnan().any()) else "inf"
    return f"{path} has {kind}"


def saved_horizon(state: dict[str, Any], default: int) -> int:
    """The schedule horizon a checkpoint was trained with (checkpoints before the runner
    kept it hold it in the algorithm's state)."""
    horizon = state.get("runner", {}).get("horizon") or state.get("algorithm", {}).get("horizon")
    return int(horizon) if horizon else default


class Silent:
    """The progress bar of ranks other than 0: nothing."""

    def note(self, *args: Any) -> None:
        pass

    update = close = note


class Session:
    """Build everything a run needs in this process, train, and close cleanly."""

    def __init__(self, lab: Lab, algo_cls: type[Algorithm], resolved: Resolved, run_dir: Path,
                 *, fresh: bool, purpose: str = "train", total_steps: int = 0) -> None:
        self.lab = lab
        self.algo_cls = algo_cls
        self.run = resolved.run
        self.resolved = resolved
        self.run_dir = run_dir
        self.chunks = ChunkStore(run_dir / "checkpoints" / CHUNK_FOLDER)
        self.purpose = purpose
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
        self.ctx = Context(
            device=self.device,
            seed=self.run.seed,
            total_steps=total_steps,
            run_dir=run_dir,
            registry=lab.registry,
            tracker=self.tracker,
            env_id=self.run.env,
            data=self.run.data,
            data_dir=self.run.resolved_data_dir,
            eval_episodes=self.run.eval_episodes,
            training=purpose == "train",
            rank=rank,
            world_size=world,
            compile_setting=self.run.compile,
            precision=resolve_precision(self.run.precision, algo_cls.supports_bf16, self.device),
            env_options=resolved.env_option_values(),
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
        threads = self.run.threads or self.algo.cpu_threads
        if threads is not None:
            torch.set_num_threads(threads)  # for training; the networks were built on PROCESS_THREADS
        # unless --threads pins them, a CPU run gives up threads to the processes beside it
        self.cores = SharedCores(torch.get_num_threads()) \
            if self.device.type == "cpu" and self.run.threads is None and torch.get_num_threads() > 1 else None
        if self.run.epochs is not None and fresh:
            if not self.algo.steps_per_epoch:
                self.close()
                raise LabError(f"--epochs needs {algo_cls.name}.steps_per_epoch (the steps in one pass over its "
                               "data), which it does not define; give its budget with --steps")
            self.ctx.total_steps = self.run.epochs * self.algo.steps_per_epoch
        self.info: RunInfo | None = None
        # the loop's bookkeeping, checkpointed so a resumed run logs what an uninterrupted one does
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_values: dict[str, Any] = {}
        self.pending: dict[str, list[float]] = defaultdict(list)
        self.last_log_step = 0
        self.last_eval_step = -1
        self.time_offset = 0.0
        self.started = time.time()
        self.episodes: list[tuple[int, Episode]] = []  # several processes: (step, episode) not yet logged
        self.warned_key_metric = False
        # a trial of a bayes sweep reports each evaluation to its study (lab.experiments.bayes)
        self.trial = None
        if purpose == "train" and self.main and os.environ.get("LAB_OPTUNA_TRIAL"):
            from lab.experiments.bayes import TrialReporter

            self.trial = TrialReporter.from_environment()

    # -- trackers --

    def start_trackers(self, doc: dict[str, Any], resumed: bool) -> None:
        self.info = RunInfo(
            name=self.run_dir.name,
            run_dir=self.run_dir,
            algo=self.algo_cls.name,
            kind=self.algo_cls.kind,
            env=self.run.env,
            data=self.run.data,
            seed=self.run.seed,
            experiment=self.run.experiment or f"{self.algo_cls.name}-{self.run.env or self.run.data}",
            config=doc,
            resumed=resumed,
            purpose=self.purpose,
            time_offset=self.time_offset,
            start_step=self.algo.global_step,
            trackers=self.run.trackers,
            tracker_options=dict(self.resolved.tracker_options),
        )
        for name in selected_trackers(self.lab, self.run.trackers):
            reg = self.lab.registry.trackers[name]
            try:
                tracker = reg.obj(self.info)
            except LabError:
                raise
            except Exception as exc:
                print(f"warning: tracker '{reg.name}' could not start ({type(exc).__name__}: {exc}); "
                      "continuing without it", file=sys.stderr)
                continue
            if tracker is not None:
                self.tracker.trackers.append(tracker)
        self.lab.pm.hook.on_run_start(run=self.info)

    def _on_log(self, metrics: dict[str, float], step: int) -> None:
        # as logged (a NaN stays a NaN, so the report shows it); files get jsonable values
        self.last_values.update({k: float(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()})
        if self.info is not None:
            self.lab.pm.hook.on_metrics(run=self.info, metrics=metrics, step=step)

    # -- checkpoints --

    def checkpoint_state(self, algorithm_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """What latest.pt holds. Several processes: rank 0's state, plus every rank's envs and
        random streams under "ranks" (all ranks call this together; only rank 0's is written)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "algo": self.algo_cls.name,
            "global_step": self.algo.global_step,
            "algorithm": self.algo.state_dict() if algorithm_state is None else algorithm_state,
            "envs": self.ctx.env_states(),
            "rng": self.ctx.rng.state_dict(),
            "world_size": self.ctx.world_size,
            "runner": {
                "best": self.best, "best_step": self.best_step, "elapsed": self.elapsed(),
                "last_values": dict(self.last_values), "pending": {k: list(v) for k, v in self.pending.items()},
                "last_log_step": self.last_log_step, "last_eval_step": self.last_eval_step,
                "horizon": self.ctx.total_steps,
            },
        }
        if self.ctx.world_size > 1:
            state["ranks"] = distributed.gather_object(distributed.to_cpu({"envs": state["envs"], "rng": state["rng"]}))
        return state

    def save(self, best: bool = False, algorithm_state: dict[str, Any] | None = None) -> None:
        """Write latest.pt (and best.pt); a second Ctrl-C waits until the files are complete.
        Weights that are no longer finite are never written: the run has diverged."""
        self.log_episodes()  # several processes: what the envs finished belongs before the checkpoint
        with STOP.critical():
            state = self.checkpoint_state(algorithm_state)
            self.check_finite(state["algorithm"])
            if not self.main:
                return
            path = self.run_dir / "checkpoints" / "latest.pt"
            state = self.chunks.spill(state)  # replay contents: only the chunks written since the last save
            save_checkpoint(state, path)
            self.chunks.commit()
            if best:  # for evaluation: the replay/rollout contents are not needed there
                lean = {**state, "algorithm": {k: v for k, v in state["algorithm"].items() if k != "buffers"}}
                save_checkpoint(lean, self.run_dir / "checkpoints" / "best.pt")
        self.tracker.log_artifact(path, f"{self.run_dir.name}-checkpoint", "model")

    def restore(self, state: dict[str, Any], rng: bool = True) -> None:
        if self.purpose == "train":  # the replay's chunk files (an evaluation acts without a replay)
            state = self.chunks.restore(state)
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
        try:
            self.algo.load_state_dict(state["algorithm"])
        except (RuntimeError, KeyError, ValueError, IndexError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            detail = (lines[1] if len(lines) > 1 else lines[0])[:200]  # torch's first line only names the module
            raise LabError(f"the checkpoint does not fit {self.algo_cls.name} with the settings of "
                           f"{self.run_dir}/config.yaml ({type(exc).__name__}: {detail}); was config.yaml edited "
                           "after training (net_arch, ...)? put the setting back") from None
        self.algo.global_step = step
        runner = state.get("runner", {})
        self.best, self.best_step = runner.get("best"), runner.get("best_step")
        self.time_offset = float(runner.get("elapsed", 0.0))
        self.last_values = dict(runner.get("last_values", {}))
        self.pending = defaultdict(list, {k: list(v) for k, v in runner.get("pending", {}).items()})
        self.last_log_step = int(runner.get("last_log_step", step))
        self.last_eval_step = int(runner.get("last_eval_step", step if self.best is not None else -1))
        if rng and saved_world != world:
            self.ctx.rng.restart(step)
        elif rng:
            self.ctx.rng.load_state_dict(mine["rng"] if "streams" in mine["rng"] else {"global": mine["rng"]})
        if saved_world != world and self.purpose == "train":
            if self.main:
                kept = "weights, optimizer and normalisation statistics continue" if restarted else \
                    "weights, optimizer and the data position continue (the batches of all processes together " \
                    "do not depend on their number)"
                print(f"note: the checkpoint was written by {saved_world} process{'es' * (saved_world > 1)} and "
                      f"this run has {world}: {'the training envs start new episodes and ' * bool(restarted)}each "
                      f"process's random streams start afresh (seeded from the run seed, its rank and this step); "
                      f"{kept} (README: Several processes)", file=sys.stderr)
        elif restarted and self.purpose == "train" and self.main:
            print(f"note: {self.run.env} cannot save its state, so its training envs start new episodes "
                  "(seeded from the run seed and this step); weights, optimizer, buffers and random "
                  "streams continue exactly (README: Exact resume)", file=sys.stderr)

    def elapsed(self) -> float:
        return self.time_offset + time.time() - self.started

    def check_finite(self, algorithm_state: dict[str, Any]) -> None:
        problem = non_finite_tensor(algorithm_state)
        if problem is not None:
            raise Diverged(problem)

    # -- evaluation, media, episodes --

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
        self.log_episodes()  # (several processes) the episodes up to this step come first
        state = self.algo.state_dict()  # evaluating changes none of it: the checkpoint below reuses it
        self.check_finite(state)
        metrics = self.evaluation()
        key = self.algo_cls.key_metric
        value = metrics.get(key)
        if key not in metrics and self.main and not self.warned_key_metric:
            self.warned_key_metric = True
            print(f"note: {self.algo_cls.name}.evaluate() returned no '{key}' (its key_metric), so no best.pt is "
                  f"kept; it returned {', '.join(sorted(metrics)) or 'nothing'} (set key_metric to one of them)",
                  file=sys.stderr)
        improved = False
        if value is not None and math.isfinite(float(value)):
            better = max if self.algo_cls.key_metric_mode == "max" else min
            improved = self.best is None or better(float(value), self.best) != self.best
            if improved:
                self.best, self.best_step = float(value), self.algo.global_step
        self.last_eval_step = self.algo.global_step
        if self.algo_cls.media_each_evaluation and self.run.video and self.main:
            self.log_media()
        self.save(best=improved, algorithm_state=state)
        if self.trial is not None and self.trial.should_stop(metrics, key):
            raise Pruned()
        return metrics

    def log_media(self) -> dict[str, Path]:
        """Write the algorithm's media for this step (in the evaluation's random streams) and
        log each file to the trackers; returns {key: path}."""
        step = self.algo.global_step
        with self.ctx.rng.evaluation(step):
            media = self.algo.write_media(self.ctx.media_dir)
        for key, path in media.items():
            log = self.tracker.log_video if path.suffix.lower() == ".mp4" else self.tracker.log_image
            log(key, path, step)
        return media

    def log_episode(self, step: int, episode: Episode) -> None:
        self.tracker.log({"train/episode_return": episode.episode_return,
                          "train/episode_length": episode.length}, step)

    def log_episodes(self) -> None:
        """Several processes: log the episodes every rank finished since the last call, each
        at its own step (all ranks call this together, at log rows and checkpoints)."""
        if self.ctx.world_size == 1:
            return
        finished = [e for part in distributed.all_gather_object(self.episodes) for e in part]
        self.episodes = []
        for step, episode in sorted(finished, key=lambda item: item[0]):
            self.log_episode(step, episode)

    def _log_row(self, step: int, seconds: float) -> None:
        self.log_episodes()
        # train_step's values may be device tensors: they become numbers here, once a row (no sync per step)
        row = {name: sum(float(v) for v in vals) / len(vals) for name, vals in self.pending.items() if vals}
        row["perf/sps"] = (step - self.last_log_step) / max(seconds, 1e-9)
        self.tracker.log(row, step)
        self.pending.clear()
        self.last_log_step = step
        problem = non_finite_loss(row)
        if problem is not None:
            raise Diverged(problem)

    # -- the loop --

    def train(self, target: int) -> int:
        """Train until `target` steps or a stop signal; returns the process exit code."""
        algo = self.algo
        log_every, eval_every, checkpoint_every = intervals(algo, self.resolved, target)
        status, exit_code, failure = "finished", EXIT_OK, None
        log_clock, side_time = time.perf_counter(), 0.0  # side: evaluating/checkpointing since the last row
        progress = RunProgress(self.algo_cls.name, target, algo.global_step) if self.main else Silent()
        STOP.training = True
        stop = False
        try:
            # several processes stop together: a signal to any of them stops all at this step
            while algo.global_step < target and not (stop := distributed.any_flag(STOP.requested)):
                before = algo.global_step
                if self.cores is not None:
                    self.cores.adjust()
                for name, value in algo.train_step().items():
                    self.pending[name].append(value)
                compiling = self.ctx.pop_compile_seconds()
                if compiling:  # start-up, not training: kept out of perf/sps, logged on its own
                    self.pending["perf/compile_s"].append(compiling)
                    side_time += compiling
                step = algo.global_step
                if step <= before:
                    raise RuntimeError(f"{self.algo_cls.name}.train_step() did not advance global_step")
                for episode in self.ctx.pop_episodes():
                    if self.ctx.world_size > 1:  # logged with the other ranks' at the next row
                        self.episodes.append((step, episode))
                    else:
                        self.log_episode(step, episode)
                if crossed(before, step, log_every) or step >= target:
                    now = time.perf_counter()
                    self._log_row(step, now - log_clock - side_time)
                    log_clock, side_time = now, 0.0
                    progress.note(step, self.last_values, self.algo_cls.key_metric)
                if crossed(before, step, eval_every) or crossed(before, step, checkpoint_every):
                    side_start = time.perf_counter()
                    if crossed(before, step, eval_every):
                        self.evaluate()
                        progress.note(step, self.last_values, self.algo_cls.key_metric)
                    else:
                        self.save()
                    side_time += time.perf_counter() - side_start
                    compiled_meanwhile = self.ctx.pop_compile_seconds()  # a new batch shape: already side time
                    if compiled_meanwhile:
                        self.pending["perf/compile_s"].append(compiled_meanwhile)
                progress.update(step, algo.pace())
            if not (stop or distributed.any_flag(STOP.requested)):
                if self.last_eval_step != algo.global_step:
                    self.evaluate()
                if self.run.video and not self.algo_cls.media_each_evaluation and self.main:
                    self.log_media()  # (otherwise the last evaluation wrote it)
            else:
                status, exit_code = "interrupted", STOP.exit_code()
            self.save()
        except KeyboardInterrupt:
            status, exit_code = "interrupted", 128 + signal.SIGINT
        except Diverged as problem:
            status, exit_code = "diverged", EXIT_FAILED
            failure = self.divergence_message(str(problem))
        except Pruned:  # the sweep stopped it; its checkpoint is saved
            status, exit_code = "pruned", EXIT_OK
            print(f"pruned by the sweep's pruner at step {self.algo.global_step:,}", file=sys.stderr)
        except LabError:
            status, exit_code = "failed", 2
            raise
        except Exception:
            status, exit_code, failure = "failed", EXIT_FAILED, traceback.format_exc()
        finally:
            progress.close()
            if failure is not None:
                print(failure, file=sys.stderr, end="")
            with STOP.critical(then_stop=False):
                self.finish(status, target)
            STOP.done = True  # saved and reported: a late Ctrl-C now just ends the process
        return exit_code

    def divergence_message(self, problem: str) -> str:
        """One line: what went non-finite where, the likely cause, and what resume continues from."""
        lr = getattr(self.resolved.algo, "learning_rate", None)
        cause = f"the learning rate ({lr:g}) is likely too high" if isinstance(lr, float) else \
            "a learning rate too high is the usual cause"
        from lab.experiments.runs import checkpoint_step

        saved = checkpoint_step(self.run_dir)
        resume = (f"checkpoints/latest.pt is the last finite state (step {saved:,}): `lab resume {self.run_dir}` "
                  "continues from it" if saved is not None else "no finite checkpoint was saved")
        return f"error: diverged at step {self.algo.global_step:,}: {problem}; {cause}; {resume}\n"

    def finish(self, status: str, target: int) -> None:
        if not self.main:  # rank 0 writes and reports for every process
            self.close()
            return
        summary = {
            **{k: jsonable(v) for k, v in self.last_values.items()},
            "status": status,
            "global_step": self.algo.global_step,
            "target_steps": target,
            "elapsed_s": round(self.elapsed(), 3),
            "key_metric": self.algo_cls.key_metric,
            "best": self.best,
            "best_step": self.best_step,
        }
        try:
            write_summary(self.run_dir, summary)
        except OSError as exc:  # a full or read-only disk: the checkpoints already say where the run is
            print(f"warning: cannot write {self.run_dir / 'summary.json'} ({exc.strerror or exc}); "
                  "`lab runs` rebuilds it from metrics.jsonl and the checkpoint", file=sys.stderr)
        self.tracker.finish(summary)
        if self.info is not None:
            self.lab.pm.hook.on_run_end(run=self.info, summary=summary)
        self.close()
        shown = {**summary, **self.last_values}  # NaN shows as nan in the report (null in summary.json)
        print(run_report(self.algo_cls.name, self.run.env or self.run.data, self.run_dir, shown,
                         self.algo_cls.next_command(self.run_dir)), file=sys.stderr)

    def close(self) -> None:
        self.algo.close()
        self.ctx.close_envs()
