"""The loop every algorithm shares: budget, logging, evaluation, checkpoints, signals, resume.

`train`, `resume`, `evaluate_run` and `load` are what the CLI and `lab.load` call. A
`Session` is one process's life of a run: it builds the context, the algorithm and the
trackers, runs the loop and always leaves a consistent run directory behind (summary.json
says how it ended).

Exact resume: a checkpoint holds, besides the algorithm's state, every random stream of
the run (`lab.run.seeding`), the training envs (`lab.vecenv.TrainingEnv`) and the loop's own
bookkeeping (metrics averaged since the last log row, the last evaluation, the best
value), so a run stopped and resumed logs what the same run left alone logs, step for
step, wherever the envs can be saved.

Under torchrun (`lab.distributed`, README: Several processes) every process runs a Session
in lockstep: rank 0 alone makes the run directory, logs, evaluates agents, writes
checkpoints and the summary and prints; the others train their share. Set-up failures on
any rank stop them all (`distributed.together`), a stop signal on any rank stops them all
at the same step, and checkpoints gather each rank's envs and random streams.
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lab import distributed
from lab.algorithm import Algorithm
from lab.run.checkpoint import load_checkpoint, save_checkpoint
from lab.config import RunConfig, Resolved, as_plain, resolve
from lab.run.context import Context
from lab.device import resolve_device
from lab.run.discovery import Lab
from lab.errors import LabError, unknown
from lab.run.progress import RunProgress, run_report
from lab.run.rundir import (
    RunLock,
    create_run_dir,
    default_run_name,
    git_commit,
    read_config,
    read_summary,
    truncate_metrics,
    versions,
    write_config,
    write_summary,
)
from lab.run.info import RunInfo
from lab.run.seeding import derive_seed, seed_everything
from lab.run.signals import STOP, SetupInterrupted
from lab.tracking import MultiTracker, jsonable

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


def wandb_mode(requested: str | None) -> str:
    """online when logged in (API key in the environment or ~/.netrc), else offline."""
    if requested is not None:
        return requested
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    import netrc

    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        auth = None
    return "online" if auth else "offline"


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


def intervals(algo: Algorithm, run: RunConfig, total: int) -> tuple[int, int, int]:
    """(log, eval, checkpoint) intervals in steps."""
    per_epoch = algo.steps_per_epoch
    if per_epoch:
        log_default, eval_default = max(1, per_epoch // 10), per_epoch
    else:
        log_default, eval_default = max(1, min(1000, total // 100)), max(1, total // 10)
    eval_every = run.eval_interval or eval_default
    return run.log_interval or log_default, eval_every, run.checkpoint_interval or eval_every


def round_budget(algo_cls: type[Algorithm], config: Any, steps: int) -> int:
    """`steps` rounded up to what the algorithm can stop at (whole rollouts, whole vector steps)."""
    multiple = max(1, int(algo_cls.step_multiple(config)))
    rounded = -(-steps // multiple) * multiple
    if rounded != steps and distributed.is_main():
        print(f"note: --steps {steps} rounded up to {rounded}: {algo_cls.name} advances "
              f"{multiple} steps at a time with these settings", file=sys.stderr)
    return rounded


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
        self.purpose = purpose
        # only training runs on several processes; `lab eval` and `lab.load` are one process
        rank, world = (distributed.rank(), distributed.world_size()) if purpose == "train" else (0, 1)
        self.main = rank == 0
        if world > 1 and not getattr(algo_cls, "data_parallel", False):
            raise LabError(f"{algo_cls.name} cannot train on several processes yet (it does not average its "
                           f"gradients across them); run it without torchrun")
        self.device = resolve_device(self.run.device)
        if world > 1:
            self.device = distributed.device_for(self.device)
        seed_everything(self.run.seed)
        torch.set_num_threads(PROCESS_THREADS)
        self.tracker = MultiTracker([], on_log=self._on_log)
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
        if self.run.epochs is not None and purpose == "train":
            if not self.algo.steps_per_epoch:
                self.close()
                raise LabError(f"--epochs needs a dataset algorithm; {algo_cls.name} counts --steps")
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
        self.episodes: list[tuple[int, Any]] = []  # several processes: (step, episode) not yet logged

    # -- trackers --

    def start_trackers(self, doc: dict[str, Any], resumed: bool) -> None:
        mode = wandb_mode(self.run.wandb)
        self.info = RunInfo(
            name=self.run_dir.name,
            run_dir=self.run_dir,
            algo=self.algo_cls.name,
            kind=self.algo_cls.kind,
            env=self.run.env,
            data=self.run.data,
            seed=self.run.seed,
            experiment=self.run.experiment or f"{self.algo_cls.name}-{self.run.env or self.run.data}",
            project=self.run.project,
            wandb_mode=mode,
            wandb_artifacts=self.run.wandb_artifacts,
            config=doc,
            resumed=resumed,
            purpose=self.purpose,
            time_offset=self.time_offset,
            start_step=self.algo.global_step,
            trackers=self.run.trackers,
        )
        started = []
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
                started.append(name)
        if mode == "offline" and "wandb" in started:
            print(f"W&B is offline: upload later with "
                  f"`wandb sync --id {self.run_dir.name} {self.run_dir / 'wandb'}/offline-run-*`", file=sys.stderr)
        self.lab.pm.hook.on_run_start(run=self.info)

    def _on_log(self, metrics: dict[str, float], step: int) -> None:
        self.last_values.update({k: jsonable(v) for k, v in metrics.items()})
        if self.info is not None:
            self.lab.pm.hook.on_metrics(run=self.info, metrics=metrics, step=step)

    # -- checkpoints --

    def checkpoint_state(self) -> dict[str, Any]:
        """What latest.pt holds. Several processes: rank 0's state, plus every rank's envs and
        random streams under "ranks" (all ranks call this together; only rank 0's is written)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "algo": self.algo_cls.name,
            "global_step": self.algo.global_step,
            "algorithm": self.algo.state_dict(),
            "envs": self.ctx.env_states(),
            "rng": self.ctx.rng.state_dict(),
            "world_size": self.ctx.world_size,
            "runner": {
                "best": self.best, "best_step": self.best_step, "elapsed": self.elapsed(),
                "last_values": dict(self.last_values), "pending": {k: list(v) for k, v in self.pending.items()},
                "last_log_step": self.last_log_step, "last_eval_step": self.last_eval_step,
            },
        }
        if self.ctx.world_size > 1:
            state["ranks"] = distributed.gather_object(distributed.to_cpu({"envs": state["envs"], "rng": state["rng"]}))
        return state

    def save(self, best: bool = False) -> None:
        """Write latest.pt (and best.pt); a second Ctrl-C waits until the files are complete."""
        self.log_episodes()  # several processes: what the envs finished belongs before the checkpoint
        with STOP.critical():
            state = self.checkpoint_state()
            if not self.main:
                return
            path = self.run_dir / "checkpoints" / "latest.pt"
            save_checkpoint(state, path)
            if best:  # for evaluation: the replay/rollout contents are not needed there
                lean = {**state, "algorithm": {k: v for k, v in state["algorithm"].items() if k != "buffers"}}
                save_checkpoint(lean, self.run_dir / "checkpoints" / "best.pt")
        if self.run.wandb_artifacts:
            self.tracker.log_artifact(path, f"{self.run_dir.name}-checkpoint", "model")

    def restore(self, state: dict[str, Any], rng: bool = True) -> None:
        step = int(state["global_step"])
        saved_world, world = int(state.get("world_size", 1)), self.ctx.world_size
        mine = state["ranks"][self.ctx.rank] if world > 1 and saved_world == world else state
        # another number of processes: the saved envs and streams belonged to other ranks
        restarted = self.ctx.load_env_states(mine.get("envs") if saved_world == world else None, step)
        self.algo.load_state_dict(state["algorithm"])
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

    # -- the loop --

    def evaluate(self) -> dict[str, float]:
        """Evaluate, log, checkpoint. Several processes: every rank evaluates its share of a
        dataset (the algorithm adds the ranks up); agents are evaluated by rank 0 alone, on
        the same episodes one process would play."""
        step = self.algo.global_step
        self.log_episodes()  # (several processes) the episodes up to this step come first
        metrics: dict[str, float] = {}
        if self.main or self.algo_cls.kind != "agent":
            with self.ctx.rng.evaluation(step):
                metrics = self.algo.evaluate()
        self.tracker.log(metrics, step)
        value = metrics.get(self.algo_cls.key_metric)
        improved = False
        if value is not None and math.isfinite(float(value)):
            better = max if self.algo_cls.key_metric_mode == "max" else min
            improved = self.best is None or better(float(value), self.best) != self.best
            if improved:
                self.best, self.best_step = float(value), step
        self.last_eval_step = step
        if self.algo_cls.media_each_evaluation and self.run.video and self.main:
            self.log_media()
        self.save(best=improved)
        return metrics

    def log_media(self) -> None:
        step = self.algo.global_step
        with self.ctx.rng.evaluation(step):
            media = self.algo.write_media(self.ctx.media_dir)
        for key, path in media.items():
            if path.suffix.lower() == ".mp4":
                self.tracker.log_video(key, path, step)
            else:
                self.tracker.log_image(key, path, step)

    def log_episodes(self) -> None:
        """Several processes: log the episodes every rank finished since the last call, each
        at its own step (all ranks call this together, at log rows and checkpoints)."""
        if self.ctx.world_size == 1 or self.algo_cls.kind != "agent":
            return
        finished = [e for part in distributed.all_gather_object(self.episodes) for e in part]
        self.episodes = []
        for step, episode in sorted(finished, key=lambda item: item[0]):
            self.tracker.log({"train/episode_return": episode.episode_return,
                              "train/episode_length": episode.length}, step)

    def _log_row(self, step: int, seconds: float) -> None:
        self.log_episodes()
        row = {name: sum(vals) / len(vals) for name, vals in self.pending.items() if vals}
        row["perf/sps"] = (step - self.last_log_step) / max(seconds, 1e-9)
        self.tracker.log(row, step)
        self.pending.clear()
        self.last_log_step = step

    def train(self, target: int) -> int:
        """Train until `target` steps or a stop signal; returns the process exit code."""
        algo = self.algo
        log_every, eval_every, checkpoint_every = intervals(algo, self.run, target)
        status, exit_code = "finished", EXIT_OK
        log_clock, side_time = time.perf_counter(), 0.0  # side: evaluating/checkpointing since the last row
        progress = RunProgress(self.algo_cls.name, target, algo.global_step) if self.main else Silent()
        STOP.training = True
        stop = False
        try:
            # several processes stop together: a signal to any of them stops all at this step
            while algo.global_step < target and not (stop := distributed.any_flag(STOP.requested)):
                before = algo.global_step
                for name, value in algo.train_step().items():
                    self.pending[name].append(float(value))
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
                        continue
                    self.tracker.log({"train/episode_return": episode.episode_return,
                                      "train/episode_length": episode.length}, step)
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
                progress.update(step)
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
        except LabError:
            status, exit_code = "failed", 2
            raise
        except Exception:
            status, exit_code = "failed", EXIT_FAILED
            progress.close()
            traceback.print_exc()
        finally:
            progress.close()
            with STOP.critical(then_stop=False):
                self.finish(status, target)
            STOP.done = True  # saved and reported: a late Ctrl-C now just ends the process
        return exit_code

    def finish(self, status: str, target: int) -> None:
        if not self.main:  # rank 0 writes and reports for every process
            self.close()
            return
        summary = {
            **self.last_values,
            "status": status,
            "global_step": self.algo.global_step,
            "target_steps": target,
            "elapsed_s": round(self.elapsed(), 3),
            "key_metric": self.algo_cls.key_metric,
            "best": self.best,
            "best_step": self.best_step,
        }
        write_summary(self.run_dir, summary)
        self.tracker.finish(summary)
        if self.info is not None:
            self.lab.pm.hook.on_run_end(run=self.info, summary=summary)
        self.close()
        print(run_report(self.algo_cls.name, self.algo_cls.kind, self.run.env or self.run.data, self.run_dir,
                         summary), file=sys.stderr)

    def close(self) -> None:
        self.algo.close()
        self.ctx.close_envs()


def _config_doc(lab: Lab, session: Session, resolved: Resolved, target: int) -> dict[str, Any]:
    return {
        "algo": session.algo_cls.name,
        "kind": session.algo_cls.kind,
        "preset": resolved.preset,
        "seed": resolved.run.seed,
        "device": str(session.device),
        "total_steps": target,
        "world_size": session.ctx.world_size,  # processes training together (torchrun)
        "run": as_plain(resolved.run),
        "config": as_plain(resolved.algo),
        "plugins_dir": lab.plugins_dir,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(Path.cwd()),
        "versions": versions(),
    }


def _check_target(algo_cls: type[Algorithm], run: RunConfig, lab: Lab) -> None:
    if algo_cls.kind == "agent":
        if run.env is None:
            raise LabError(f"{algo_cls.name} is an agent: pass --env ID (e.g. CartPole-v1; `lab plugins` lists envs)")
        lab.registry.env_factory(run.env)
        if run.epochs is not None:
            raise LabError(f"{algo_cls.name} is an agent: give its budget with --steps, not --epochs")
    else:
        if run.data is None:
            raise LabError(f"{algo_cls.name} trains on a dataset: pass --data NAME (e.g. mnist; `lab plugins` lists datasets)")
        lab.registry.dataset_factory(run.data.partition(":")[0])


def _budget(algo_cls: type[Algorithm], resolved: Resolved) -> None:
    """Neither --steps nor --epochs: the preset's budget (RL Zoo's n_timesteps), else the algorithm's."""
    run = resolved.run
    if run.steps is None and run.epochs is None:
        if resolved.preset_steps is not None:
            run.steps = resolved.preset_steps
        elif algo_cls.kind == "agent":
            run.steps = algo_cls.default_steps
        else:
            run.epochs = algo_cls.default_epochs
    if run.steps is not None:
        run.steps = round_budget(algo_cls, resolved.algo, run.steps)


def train(lab: Lab, algo_name: str, cli: dict[str, Any], file_values: dict[str, Any] | None = None) -> int:
    distributed.init_from_env()  # under torchrun: join the other processes (otherwise nothing)
    try:
        code = _train(lab, algo_name, cli, file_values)
    except BaseException:
        distributed.destroy()
        raise
    distributed.destroy(wait=True)
    return code


def _train(lab: Lab, algo_name: str, cli: dict[str, Any], file_values: dict[str, Any] | None) -> int:
    main, lock, run_dir = distributed.is_main(), None, None
    with distributed.together():  # every rank checks the settings
        algo_cls = lab.registry.algorithm(algo_name)
        resolved = resolve(algo_cls, cli, file_values)
        _budget(algo_cls, resolved)
        run = resolved.run
        _check_target(algo_cls, run, lab)
        selected_trackers(lab, run.trackers)  # an unknown name fails before the run directory exists
        resolve_device(run.device)
    with distributed.together():  # then rank 0 makes the run directory
        if main:
            name = run.name or default_run_name(algo_cls.name, run.env or run.data, run.seed)
            run_dir = create_run_dir(run.resolved_runs_dir, name)
            lock = RunLock(run_dir).acquire("train")
    # the others learn its name (a default one has rank 0's time in it); they never write there
    run_dir = run.resolved_runs_dir / distributed.broadcast_object(run_dir.name if main else None)
    try:
        session = None
        try:
            with distributed.together():
                session = Session(lab, algo_cls, resolved, run_dir, fresh=True, total_steps=run.steps or 0)
            with distributed.together():
                STOP.raise_if_requested()
                target = session.ctx.total_steps
                if main:
                    doc = _config_doc(lab, session, resolved, target)
                    write_config(run_dir, doc)
                    session.start_trackers(doc, resumed=False)
                STOP.raise_if_requested()
        except BaseException as exc:  # nothing was trained: leave no half-made run behind
            if session is not None:
                session.tracker.finish({"status": "failed"})
                session.close()
            if main:
                shutil.rmtree(run_dir, ignore_errors=True)
            if not isinstance(exc, SetupInterrupted):
                raise
            if main:
                print("interrupted while setting up; no run was started", file=sys.stderr)
            return STOP.exit_code()
        if main:
            print(f"run: {run_dir}", file=sys.stderr)
        return session.train(target)
    finally:
        if lock is not None:
            lock.release()


def _reload(lab: Lab, run_dir: Path, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], type[Algorithm], Resolved]:
    return _resolve_doc(lab, read_config(run_dir), overrides)


def _resolve_doc(lab: Lab, doc: dict[str, Any],
                 overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], type[Algorithm], Resolved]:
    algo_cls = lab.registry.algorithm(str(doc["algo"]))
    values = {**doc.get("run", {}), **doc.get("config", {}), **(overrides or {})}
    values.pop("steps", None), values.pop("epochs", None)
    values["steps"] = int(doc.get("total_steps") or 1)
    return doc, algo_cls, resolve(algo_cls, {}, values)


def resume(lab: Lab, run_dir: Path, steps: int | None = None, epochs: int | None = None,
           checkpoint: str = "latest") -> int:
    distributed.init_from_env()  # under torchrun: join the other processes (otherwise nothing)
    try:
        code = _resume(lab, run_dir, steps, epochs, checkpoint)
    except BaseException:
        distributed.destroy()
        raise
    distributed.destroy(wait=True)
    return code


def _resume(lab: Lab, run_dir: Path, steps: int | None, epochs: int | None, checkpoint: str) -> int:
    main, lock, loaded = distributed.is_main(), None, None
    try:
        with distributed.together():  # rank 0 alone reads the run directory (other nodes need not see it)
            if main:
                doc, algo_cls, resolved = _reload(lab, run_dir)
                selected_trackers(lab, resolved.run.trackers)  # before metrics.jsonl is cut back
                lock = RunLock(run_dir).acquire("resume")
                loaded = (doc, load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt"))
        doc, state = distributed.broadcast_object(loaded)
        session = None
        try:
            with distributed.together():
                if not main:
                    doc, algo_cls, resolved = _resolve_doc(lab, doc)
                session = Session(lab, algo_cls, resolved, run_dir, fresh=False, total_steps=int(doc["total_steps"]))
            with distributed.together():
                session.restore(state)
                done = session.algo.global_step
                if epochs is not None:
                    if not session.algo.steps_per_epoch:
                        raise LabError(f"{algo_cls.name} counts --steps, not --epochs; resume with --steps N")
                    target = epochs * session.algo.steps_per_epoch
                elif steps is not None:
                    target = round_budget(algo_cls, resolved.algo, steps)
                else:
                    target = int(doc["total_steps"])
                if target <= done:
                    raise LabError(
                        f"run '{run_dir}' is already at step {done} (target {target}); "
                        f"pass a larger --steps to train further"
                    )
                STOP.raise_if_requested()
                if main:
                    truncate_metrics(run_dir, done)
                    doc["total_steps"] = target
                    doc["run"]["steps"], doc["run"]["epochs"] = (None, epochs) if epochs is not None else (target, None)
                    doc["world_size"] = session.ctx.world_size
                    write_config(run_dir, doc)
                    session.start_trackers(doc, resumed=True)
                STOP.raise_if_requested()
        except SetupInterrupted:
            if session is not None:
                session.tracker.finish({**read_summary(run_dir)} if main else {})
                session.close()
            if main:
                print("interrupted while setting up; the run is unchanged", file=sys.stderr)
            return STOP.exit_code()
        except BaseException:
            if session is not None:
                session.close()
            raise
        if main:
            print(f"resuming {run_dir} from step {done} to {target}" +
                  (" (from best.pt)" if checkpoint == "best" else ""), file=sys.stderr)
        return session.train(target)
    finally:
        if lock is not None:
            lock.release()


def evaluate_run(lab: Lab, run_dir: Path, episodes: int | None = None, video: bool = False,
                 checkpoint: str = "latest") -> dict[str, Any]:
    """`lab eval`: load a checkpoint, evaluate, write eval.json (and media), log to W&B."""
    import json

    if distributed.launched():
        raise LabError("lab eval runs in one process; run it without torchrun")

    overrides = {"eval_episodes": episodes} if episodes is not None else {}
    doc, algo_cls, resolved = _reload(lab, run_dir, overrides)
    lock = RunLock(run_dir).acquire("eval")
    try:
        state = load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt")
        session = Session(lab, algo_cls, resolved, run_dir, fresh=False, purpose="eval",
                          total_steps=int(doc["total_steps"]))
        try:
            session.restore(state, rng=False)
            step = session.algo.global_step
            session.start_trackers(doc, resumed=True)
            with session.ctx.rng.evaluation(step):
                metrics = {k: jsonable(v) for k, v in session.algo.evaluate().items()}
            session.tracker.log(metrics, step)
            media = {}
            if video:
                with session.ctx.rng.evaluation(step):
                    written = session.algo.write_media(session.ctx.media_dir)
                media = {k: str(p) for k, p in written.items()}
                for key, p in media.items():
                    log = session.tracker.log_video if p.endswith(".mp4") else session.tracker.log_image
                    log(key, Path(p), step)
            result = {"checkpoint": checkpoint, "global_step": step,
                      "episodes": resolved.run.eval_episodes, **metrics, "media": media}
            (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            session.tracker.finish({**read_summary(run_dir), **metrics})
        finally:
            session.close()
    finally:
        lock.release()
    return result


def load(lab: Lab, run_dir: Path, checkpoint: str = "best", device: str | None = None) -> Algorithm:
    """The trained algorithm of `run_dir`, ready to use (`act(obs)` for agents); see `lab.load`."""
    overrides = {"device": device} if device is not None else {}
    doc, algo_cls, resolved = _reload(lab, run_dir, overrides)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(path)
    session = Session(lab, algo_cls, resolved, run_dir, fresh=False, purpose="eval",
                      total_steps=int(doc["total_steps"]))
    try:
        session.restore(state, rng=False)
    except BaseException:
        session.close()
        raise
    return session.algo
