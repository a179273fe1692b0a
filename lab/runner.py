"""The loop every algorithm shares: budget, logging, evaluation, checkpoints, signals, resume.

`train`, `resume` and `evaluate_run` are what the CLI calls. A `Session` is one process's
life of a run: it builds the context, the algorithm and the trackers, runs the loop and
always leaves a consistent run directory behind (summary.json says how it ended).
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lab.algorithm import Algorithm
from lab.checkpoint import load_checkpoint, save_checkpoint
from lab.config import RunConfig, Resolved, as_plain, resolve
from lab.context import Context
from lab.device import resolve_device
from lab.discovery import Lab
from lab.errors import LabError
from lab.progress import RunProgress
from lab.rundir import (
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
from lab.run import RunInfo
from lab.seeding import rng_state, seed_everything, set_rng_state
from lab.tracking import MultiTracker, jsonable

EXIT_OK, EXIT_FAILED = 0, 1


class StopRequest:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second signal stops now."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
              "(send again to stop at once)", file=sys.stderr, flush=True)


def crossed(before: int, after: int, interval: int) -> bool:
    """True when [before, after) passed a multiple of `interval` (steps jump by num_envs)."""
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


@dataclass
class Intervals:
    log: int
    eval: int
    checkpoint: int


def intervals(algo: Algorithm, run: RunConfig, total: int) -> Intervals:
    per_epoch = algo.steps_per_epoch
    if per_epoch:
        log_default, eval_default = max(1, per_epoch // 10), per_epoch
    else:
        log_default, eval_default = max(1, min(1000, total // 100)), max(1, total // 10)
    eval_every = run.eval_interval or eval_default
    return Intervals(run.log_interval or log_default, eval_every, run.checkpoint_interval or eval_every)


class Session:
    """Build everything a run needs in this process, train, and close cleanly."""

    def __init__(self, lab: Lab, algo_cls: type[Algorithm], resolved: Resolved, run_dir: Path,
                 *, fresh: bool, purpose: str = "train") -> None:
        self.lab = lab
        self.algo_cls = algo_cls
        self.run = resolved.run
        self.resolved = resolved
        self.run_dir = run_dir
        self.purpose = purpose
        self.device = resolve_device(self.run.device)
        seed_everything(self.run.seed)
        self.tracker = MultiTracker([], on_log=self._on_log)
        self.ctx = Context(
            device=self.device,
            seed=self.run.seed,
            total_steps=self.run.steps or 0,
            run_dir=run_dir,
            registry=lab.registry,
            tracker=self.tracker,
            env_id=self.run.env,
            data=self.run.data,
            data_dir=self.run.resolved_data_dir,
            eval_episodes=self.run.eval_episodes,
            training=purpose == "train",
        )
        try:
            self.algo = algo_cls(resolved.algo, self.ctx)
        except BaseException:
            self.ctx.close_envs()
            if fresh:  # nothing of the user's is in a run directory we just made
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if self.run.epochs is not None:
            if not self.algo.steps_per_epoch:
                self.close()
                raise LabError(f"--epochs needs a dataset algorithm; {algo_cls.name} counts --steps")
            self.ctx.total_steps = self.run.epochs * self.algo.steps_per_epoch
        self.info: RunInfo | None = None
        self.best: float | None = None
        self.last_values: dict[str, Any] = {}
        self.time_offset = 0.0
        self.started = time.time()

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
        )
        for reg in self.lab.registry.trackers.values():
            try:
                tracker = reg.obj(self.info)
            except Exception as exc:
                print(f"warning: tracker '{reg.name}' could not start ({type(exc).__name__}: {exc}); "
                      "continuing without it", file=sys.stderr)
                continue
            if tracker is not None:
                self.tracker.trackers.append(tracker)
        if mode == "offline" and "wandb" in self.lab.registry.trackers:
            print(f"W&B is offline: upload later with "
                  f"`wandb sync --id {self.run_dir.name} {self.run_dir / 'wandb'}/offline-run-*`", file=sys.stderr)
        self.lab.pm.hook.on_run_start(run=self.info)

    def _on_log(self, metrics: dict[str, float], step: int) -> None:
        self.last_values.update({k: jsonable(v) for k, v in metrics.items()})
        if self.info is not None:
            self.lab.pm.hook.on_metrics(run=self.info, metrics=metrics, step=step)

    # -- checkpoints --

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": 1,
            "algo": self.algo_cls.name,
            "global_step": self.algo.global_step,
            "algorithm": self.algo.state_dict(),
            "rng": rng_state(),
            "runner": {"best": self.best, "elapsed": self.elapsed(), "last_values": dict(self.last_values)},
        }

    def save(self, best: bool = False) -> None:
        state = self.checkpoint_state()
        path = self.run_dir / "checkpoints" / "latest.pt"
        save_checkpoint(state, path)
        if best:  # for evaluation: the replay/rollout contents are not needed there
            lean = {**state, "algorithm": {k: v for k, v in state["algorithm"].items() if k != "buffers"}}
            save_checkpoint(lean, self.run_dir / "checkpoints" / "best.pt")
        if self.run.wandb_artifacts:
            self.tracker.log_artifact(path, f"{self.run_dir.name}-checkpoint", "model")

    def restore(self, state: dict[str, Any], rng: bool = True) -> None:
        self.algo.load_state_dict(state["algorithm"])
        self.algo.global_step = int(state["global_step"])
        runner = state.get("runner", {})
        self.best = runner.get("best")
        self.time_offset = float(runner.get("elapsed", 0.0))
        self.last_values = dict(runner.get("last_values", {}))
        if rng:
            set_rng_state(state["rng"])

    def elapsed(self) -> float:
        return self.time_offset + time.time() - self.started

    # -- the loop --

    def evaluate(self) -> dict[str, float]:
        metrics = self.algo.evaluate()
        step = self.algo.global_step
        self.tracker.log(metrics, step)
        key = self.algo_cls.key_metric
        value = metrics.get(key)
        improved = False
        if value is not None and math.isfinite(float(value)):
            better = max if self.algo_cls.key_metric_mode == "max" else min
            improved = self.best is None or better(float(value), self.best) != self.best
            if improved:
                self.best = float(value)
        self.save(best=improved)
        return metrics

    def log_media(self) -> None:
        for key, path in self.algo.write_media(self.ctx.media_dir).items():
            if path.suffix.lower() == ".mp4":
                self.tracker.log_video(key, path, self.algo.global_step)
            else:
                self.tracker.log_image(key, path, self.algo.global_step)

    def train(self, target: int) -> int:
        """Train until `target` steps or a stop signal; returns the process exit code."""
        algo, every = self.algo, intervals(self.algo, self.run, target)
        status, exit_code = "finished", EXIT_OK
        pending: dict[str, list[float]] = defaultdict(list)
        last_log_step, last_log_time = algo.global_step, time.perf_counter()
        side_time = 0.0  # seconds spent evaluating/checkpointing since the last log row
        last_eval_step = algo.global_step if self.best is not None else -1
        progress = RunProgress(self.algo_cls.name, target, algo.global_step)
        with StopRequest() as stop:
            try:
                while algo.global_step < target and stop.signum is None:
                    before = algo.global_step
                    for name, value in algo.train_step().items():
                        pending[name].append(float(value))
                    step = algo.global_step
                    if step <= before:
                        raise RuntimeError(f"{self.algo_cls.name}.train_step() did not advance global_step")
                    for episode in self.ctx.pop_episodes():
                        self.tracker.log({"train/episode_return": episode.episode_return,
                                          "train/episode_length": episode.length}, step)
                    if crossed(before, step, every.log) or step >= target:
                        now = time.perf_counter()
                        row = {name: sum(vals) / len(vals) for name, vals in pending.items() if vals}
                        row["perf/sps"] = (step - last_log_step) / max(now - last_log_time - side_time, 1e-9)
                        self.tracker.log(row, step)
                        progress.note(step, self._headline())
                        pending.clear()
                        last_log_step, last_log_time, side_time = step, now, 0.0
                    if crossed(before, step, every.eval) or crossed(before, step, every.checkpoint):
                        side_start = time.perf_counter()
                        if crossed(before, step, every.eval):
                            self.evaluate()
                            last_eval_step = step
                        else:
                            self.save()
                        side_time += time.perf_counter() - side_start
                    progress.update(step)
                if stop.signum is None:
                    if last_eval_step != algo.global_step:
                        self.evaluate()
                    if self.run.video:
                        self.log_media()
                else:
                    status, exit_code = "interrupted", 128 + stop.signum
                self.save()
            except KeyboardInterrupt:
                status, exit_code = "interrupted", 128 + signal.SIGINT
            except LabError:
                status, exit_code = "failed", 2
                raise
            except Exception:
                status, exit_code = "failed", EXIT_FAILED
                traceback.print_exc()
            finally:
                progress.close()
                self.finish(status, target)
        return exit_code

    def _headline(self) -> dict[str, float]:
        keys = ("train/episode_return", self.algo_cls.key_metric, "train/loss", "perf/sps")
        return {k: self.last_values[k] for k in keys if isinstance(self.last_values.get(k), (int, float))}

    def finish(self, status: str, target: int) -> None:
        summary = {
            **self.last_values,
            "status": status,
            "global_step": self.algo.global_step,
            "target_steps": target,
            "elapsed_s": round(self.elapsed(), 3),
            "key_metric": self.algo_cls.key_metric,
            "best": self.best,
        }
        write_summary(self.run_dir, summary)
        self.tracker.finish(summary)
        if self.info is not None:
            self.lab.pm.hook.on_run_end(run=self.info, summary=summary)
        self.close()

    def close(self) -> None:
        self.algo.close()
        self.ctx.close_envs()


def _config_doc(session: Session, resolved: Resolved, target: int) -> dict[str, Any]:
    return {
        "algo": session.algo_cls.name,
        "kind": session.algo_cls.kind,
        "preset": resolved.preset,
        "seed": resolved.run.seed,
        "device": str(session.device),
        "total_steps": target,
        "run": as_plain(resolved.run),
        "config": as_plain(resolved.algo),
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


def _with_default_budget(algo_cls: type[Algorithm], resolved: Resolved) -> Resolved:
    run = resolved.run
    if run.steps is None and run.epochs is None:
        if algo_cls.kind == "agent":
            run.steps = algo_cls.default_steps
        else:
            run.epochs = algo_cls.default_epochs
    return resolved


def train(lab: Lab, algo_name: str, cli: dict[str, Any], file_values: dict[str, Any] | None = None) -> int:
    algo_cls = lab.registry.algorithm(algo_name)
    resolved = _with_default_budget(algo_cls, resolve(algo_cls, cli, file_values))
    run = resolved.run
    _check_target(algo_cls, run, lab)
    resolve_device(run.device)
    name = run.name or default_run_name(algo_cls.name, run.env or run.data, run.seed)
    run_dir = create_run_dir(run.resolved_runs_dir, name)
    session = Session(lab, algo_cls, resolved, run_dir, fresh=True)
    target = session.ctx.total_steps
    doc = _config_doc(session, resolved, target)
    write_config(run_dir, doc)
    session.start_trackers(doc, resumed=False)
    print(f"run: {run_dir}", file=sys.stderr)
    return session.train(target)


def _reload(lab: Lab, run_dir: Path, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], type[Algorithm], Resolved]:
    doc = read_config(run_dir)
    algo_cls = lab.registry.algorithm(str(doc["algo"]))
    values = {**doc.get("run", {}), **doc.get("config", {}), **(overrides or {})}
    values.pop("steps", None), values.pop("epochs", None)
    values["steps"] = int(doc.get("total_steps") or 1)
    return doc, algo_cls, resolve(algo_cls, {}, values)


def resume(lab: Lab, run_dir: Path, steps: int | None = None, epochs: int | None = None) -> int:
    doc, algo_cls, resolved = _reload(lab, run_dir)
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    session = Session(lab, algo_cls, resolved, run_dir, fresh=False)
    try:
        session.restore(state)
        done = session.algo.global_step
        if epochs is not None:
            if not session.algo.steps_per_epoch:
                raise LabError(f"{algo_cls.name} counts --steps, not --epochs; resume with --steps N")
            target = epochs * session.algo.steps_per_epoch
        else:
            target = steps if steps is not None else int(doc["total_steps"])
        if target <= done:
            raise LabError(
                f"run '{run_dir}' is already at step {done} (target {target}); "
                f"pass a larger --steps to train further"
            )
    except BaseException:
        session.close()
        raise
    truncate_metrics(run_dir, done)
    doc["total_steps"] = target
    write_config(run_dir, doc)
    session.start_trackers(doc, resumed=True)
    print(f"resuming {run_dir} from step {done} to {target}", file=sys.stderr)
    return session.train(target)


def evaluate_run(lab: Lab, run_dir: Path, episodes: int | None = None, video: bool = False,
                 checkpoint: str = "latest") -> dict[str, Any]:
    """`lab eval`: load a checkpoint, evaluate, write eval.json (and media), log to W&B."""
    import json

    overrides = {"eval_episodes": episodes} if episodes is not None else {}
    doc, algo_cls, resolved = _reload(lab, run_dir, overrides)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(path)
    session = Session(lab, algo_cls, resolved, run_dir, fresh=False, purpose="eval")
    try:
        session.restore(state, rng=False)
        session.start_trackers(doc, resumed=True)
        metrics = {k: jsonable(v) for k, v in session.algo.evaluate().items()}
        session.tracker.log(metrics, session.algo.global_step)
        media = {}
        if video:
            media = {k: str(p) for k, p in session.algo.write_media(session.ctx.media_dir).items()}
            for key, p in media.items():
                log = session.tracker.log_video if p.endswith(".mp4") else session.tracker.log_image
                log(key, Path(p), session.algo.global_step)
        result = {"checkpoint": checkpoint, "global_step": session.algo.global_step,
                  "episodes": resolved.run.eval_episodes, **metrics, "media": media}
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        session.tracker.finish({**read_summary(run_dir), **{f"{k}": v for k, v in metrics.items()}})
    finally:
        session.close()
    return result
