"""The ways into a run: `lab train`, `lab resume`, `lab eval`, `lab.load` and `lab.train`.

Each resolves the settings, takes the run directory's lock, builds a `Session`
(`lab.run.session`) and hands it the loop; `train` and `resume` also join torchrun's
process group when launched by it (`lab.distributed`): rank 0 alone reads and writes the
run directory, set-up failures on any rank stop them all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch

from lab import distributed
from lab.api import Agent, Algorithm, LabError, RunStatus, Target
from lab.device import resolve_device
from lab.run.checkpoint import load_checkpoint, saved_horizon
from lab.run.discovery import Lab
from lab.run.events import Observer
from lab.run.policy import AgentPolicy
from lab.run.rundir import (
    RunLock,
    atomic_write_text,
    create_run_dir,
    default_run_name,
    git_commit,
    read_config,
    read_summary,
    truncate_metrics,
    versions,
    write_config,
)
from lab.run.session import Session
from lab.run.settings import Resolved, as_plain, config_fields, resolve
from lab.run.trackers import selected_trackers
from lab.seeding import preserved_random_state
from lab.signals import STOP, SetupInterrupted

Entry = TypeVar("Entry", bound=Callable[..., Any])


def in_process_group(entry: Entry) -> Entry:
    """Join torchrun's processes around an entry point (without torchrun: nothing), and
    leave the group cleanly however the entry point ends."""

    @functools.wraps(entry)
    def joined(*args: Any, **kwargs: Any) -> Any:
        distributed.init_from_env()
        try:
            code = entry(*args, **kwargs)
        except BaseException:
            distributed.destroy()
            raise
        distributed.destroy(wait=True)
        return code

    return joined  # type: ignore[return-value]


# A budget the step multiple inflates more than this many times is refused: up to 2x (a budget
# of at least half a step) the run ends within one step of what was asked, which is what
# rounding is for; beyond, one step is much larger than the whole budget asked for, which is
# a setting that does not fit the budget (a --num-envs 100000 with --steps 2048 meant 3.2M
# steps, and a first rollout no one waited for), so the run would cost what no one asked for.
ROUNDING_LIMIT = 2


def round_budget(algo_cls: type[Algorithm], config: Any, steps: int, asked: str | None = None) -> int:
    """`steps` rounded up to what the algorithm can stop at (whole rollouts, whole vector steps);
    a budget that rounding would inflate more than ROUNDING_LIMIT times is a LabError naming the
    settings that make one step so large. `asked`: where the budget came from, for the messages."""
    multiple = max(1, int(algo_cls.step_multiple(config)))
    rounded = -(-steps // multiple) * multiple
    asked = asked or f"--steps {steps}"
    if rounded > ROUNDING_LIMIT * steps:
        causes = _step_settings(algo_cls, config)
        made = f" with {' and '.join(causes)}" if causes else " with these settings"
        lower = f"lower {' or '.join(cause.split()[0] for cause in causes)}" if causes else "change those settings"
        raise LabError(f"{asked} would be rounded up to {rounded:,} steps ({rounded / steps:,.0f}x): {algo_cls.name} "
                       f"advances {multiple:,} steps at a time{made}; {lower} for a budget near {steps:,}, or pass "
                       f"--steps {rounded} if you mean one step that long")
    if rounded != steps and distributed.is_main():
        print(f"note: {asked} rounded up to {rounded}: {algo_cls.name} advances "
              f"{multiple} steps at a time with these settings", file=sys.stderr)
    return rounded


def _step_settings(algo_cls: type[Algorithm], config: Any) -> list[str]:
    """The settings that make one step larger than 1 ('--n-steps 32', '--num-envs 100000'):
    the integer settings above 1 without which (set to 1) the step multiple shrinks."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return []
    multiple, causes = algo_cls.step_multiple(config), []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if type(value) is not int or value <= 1:
            continue
        try:
            smaller = algo_cls.step_multiple(dataclasses.replace(config, **{field.name: 1}))
        except (ValueError, TypeError, LabError):  # the settings' own checks refuse 1 there
            continue
        if smaller < multiple:
            causes.append(f"--{field.name.replace('_', '-')} {value}")
    return causes


def _config_doc(lab: Lab, session: Session, resolved: Resolved, target: int) -> dict[str, Any]:
    return {
        "algo": session.algo_cls.name,
        "kind": str(session.algo_cls.kind),
        "preset": resolved.preset,
        "seed": resolved.run.seed,
        "device": str(session.device),
        "precision": session.ctx.precision,  # what --precision auto chose on this device
        "total_steps": target,
        "horizon": session.ctx.total_steps,  # --horizon, else the budget the run was created with (a resume keeps it)
        "world_size": session.ctx.world_size,  # processes training together (torchrun)
        "run": resolved.run_section(),
        "config": as_plain(resolved.algo),
        "plugins_dir": lab.plugins_dir,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(Path.cwd()),
        "versions": versions(),
    }


def _budget(algo_cls: type[Algorithm], resolved: Resolved) -> None:
    """Neither --steps nor --epochs: the preset's budget (RL Zoo's n_timesteps), else the algorithm's."""
    run, asked = resolved.run, None
    if run.steps is None and run.epochs is None:
        if resolved.preset_steps is not None:
            run.steps, asked = resolved.preset_steps, f"the preset's budget of {resolved.preset_steps:,} steps"
        elif algo_cls.default_steps is not None:
            run.steps, asked = algo_cls.default_steps, f"the default budget of {algo_cls.default_steps:,} steps"
        else:
            run.epochs = algo_cls.default_epochs
    if run.steps is not None:
        run.steps = round_budget(algo_cls, resolved.algo, run.steps, asked)


def check_settings(lab: Lab, algo_name: str, cli: dict[str, Any],
                   file_values: dict[str, Any] | None) -> tuple[type[Algorithm], Resolved]:
    """Everything `lab train` checks before a run directory exists: the algorithm, every
    setting, the env or dataset, the trackers and the device."""
    algo_cls = lab.registry.algorithm(algo_name)
    resolved = resolve(algo_cls, cli, file_values, lab.registry)
    _budget(algo_cls, resolved)
    run = resolved.run
    algo_cls.check_target(Target(env=run.env, data=run.data, epochs=run.epochs))
    if run.env is not None:
        lab.registry.env(run.env)
    if run.data is not None:
        lab.registry.dataset_factory(run.data.partition(":")[0])
    if resolved.run.precision == "bf16" and not algo_cls.supports_bf16:
        raise LabError(f"{algo_cls.name} runs in fp32 only (it does not autocast its passes); drop --precision bf16")
    selected_trackers(lab, resolved.run.trackers)
    resolve_device(resolved.run.device)
    return algo_cls, resolved


def train(lab: Lab, algo_name: str, cli: dict[str, Any], file_values: dict[str, Any] | None = None,
          observers: Sequence[Observer] = ()) -> int:
    """`lab train ALGO ...`: a new run directory, trained to its budget; the exit code.
    `observers` watch the run besides the trackers and the progress display (a sweep's pruner)."""
    return train_run(lab, algo_name, cli, file_values, observers)[0]


@dataclass
class Opened:
    """A run ready to train: its session, the step it trains to and its directory's lock."""

    session: Session
    target: int
    run_dir: Path
    lock: RunLock | None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


@in_process_group
def train_run(lab: Lab, algo_name: str, cli: dict[str, Any], file_values: dict[str, Any] | None = None,
              observers: Sequence[Observer] = ()) -> tuple[int, Path | None]:
    """(exit code, the run directory, or None when set-up was interrupted and left none)."""
    opened = open_new(lab, algo_name, cli, file_values, observers)
    if opened is None:
        return STOP.exit_code(), None
    if distributed.is_main():
        print(f"run: {opened.run_dir}", file=sys.stderr)
    try:
        return opened.session.train(opened.target), opened.run_dir
    finally:
        opened.release()


def open_new(lab: Lab, algo_name: str, cli: dict[str, Any], file_values: dict[str, Any] | None = None,
             observers: Sequence[Observer] = ()) -> Opened | None:
    """A new run directory with its session built and started; None when a signal
    interrupted the set-up (nothing is left behind then, nor when the set-up fails). The
    caller says `run: DIR` once it starts training."""
    main, lock, run_dir = distributed.is_main(), None, None
    with distributed.together():  # every rank checks the settings
        algo_cls, resolved = check_settings(lab, algo_name, cli, file_values)
        run = resolved.run
    with distributed.together():  # then rank 0 makes the run directory
        if main:
            name = run.name or default_run_name(algo_cls.name, run.env or run.data, run.seed)
            run_dir = create_run_dir(run.resolved_runs_dir, name)
            lock = RunLock(run_dir).acquire("train")
    # the others learn its name (a default one has rank 0's time in it); they never write there
    run_dir = run.resolved_runs_dir / distributed.broadcast_object(run_dir.name if run_dir is not None else None)
    session = None
    try:
        with distributed.together():
            session = Session(lab, algo_cls, resolved, run_dir, fresh=True, total_steps=run.steps or 0,
                              observers=observers, run_loader=run_loader(lab))
        with distributed.together():
            STOP.raise_if_requested()
            target = session.ctx.total_steps
            if run.horizon is not None:  # the schedules anneal over it rather than over the budget
                session.ctx.total_steps = run.horizon
            if main:
                doc = _config_doc(lab, session, resolved, target)
                write_config(run_dir, doc)
                session.start(doc, resumed=False)
            STOP.raise_if_requested()
    except BaseException as exc:  # nothing was trained: leave no half-made run behind
        if session is not None:
            session.tracker.finish({"status": RunStatus.FAILED.value})
            session.close()
        if main:
            shutil.rmtree(run_dir, ignore_errors=True)
        if lock is not None:
            lock.release()
        if not isinstance(exc, SetupInterrupted):
            raise
        if main:
            print("interrupted while setting up; no run was started", file=sys.stderr)
        return None
    return Opened(session, target, run_dir, lock)


def _reload(lab: Lab, run_dir: Path,
            overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], type[Algorithm], Resolved]:
    return _resolve_doc(lab, read_config(run_dir), overrides)


def _resolve_doc(lab: Lab, doc: dict[str, Any],
                 overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], type[Algorithm], Resolved]:
    """The settings a run folder's config.yaml records, resolved again (settings of env
    families other than the run's, which older runs wrote for every env, are passed over)."""
    algo = str(doc["algo"])
    recorded = doc.get("plugins_dir")
    if algo not in lab.registry.algorithms and recorded and recorded != lab.plugins_dir:
        raise LabError(f"this run's algorithm '{algo}' came from the local plugin folder '{recorded}', which is not "
                       f"loaded now: pass --plugins-dir {recorded} (or set LAB_PLUGINS_DIR); code is never loaded "
                       "from a run folder")
    algo_cls = lab.registry.algorithm(algo)
    config = doc.get("config", {})
    values = {**_unrecorded_defaults(lab, algo_cls, doc), **doc.get("run", {}), **config, **(overrides or {})}
    values.pop("steps", None), values.pop("epochs", None)
    values["steps"] = int(doc.get("total_steps") or 1)
    return doc, algo_cls, resolve(algo_cls, {}, values, lab.registry, from_run_folder=True)


def _unrecorded_defaults(lab: Lab, algo_cls: type[Algorithm], doc: dict[str, Any]) -> dict[str, Any]:
    """A setting the algorithm or its env family gained after this run was made keeps the run
    as it was: its default, not a preset's newer value (the checkpoint's network was built,
    and its evaluations played, without it). Likewise a run made before `--precision` existed
    ran its passes in fp32, whatever `auto` would pick today."""
    config, run = doc.get("config", {}), doc.get("run", {})
    added: dict[str, Any] = {} if "precision" in run else {"precision": "fp32"}
    if not config:
        return added
    added.update({name: default for name, _, default, _ in config_fields(algo_cls.Config) if name not in config})
    family = lab.registry.env_family(str(run["env"])) if run.get("env") else None
    if family is not None and family.options is not None:
        added.update({name: default for name, _, default, _ in config_fields(family.options) if name not in run})
    return added


@in_process_group
def resume(lab: Lab, run_dir: Path, steps: int | None = None, epochs: int | None = None,
           checkpoint: str = "latest", overrides: dict[str, Any] | None = None,
           observers: Sequence[Observer] = ()) -> int:
    """`lab resume RUN_DIR`: continue from a checkpoint to the budget (or a new one); the exit code.
    `overrides`: trackers' settings for this session and on (`--wandb offline`); `observers` as
    for `train`."""
    opened = open_resumed(lab, run_dir, steps, epochs, checkpoint, overrides, observers)
    if opened is None:
        return STOP.exit_code()
    try:
        return opened.session.train(opened.target)
    finally:
        opened.release()


def open_resumed(lab: Lab, run_dir: Path, steps: int | None = None, epochs: int | None = None,
                 checkpoint: str = "latest", overrides: dict[str, Any] | None = None,
                 observers: Sequence[Observer] = ()) -> Opened | None:
    """`run_dir` restored from `checkpoint`, its session started; None when a signal
    interrupted the set-up (the run is unchanged then)."""
    main, lock, loaded = distributed.is_main(), None, None
    try:
        with distributed.together():  # rank 0 alone reads the run directory (other nodes need not see it)
            if main:
                doc, algo_cls, resolved = _reload(lab, run_dir, overrides)
                selected_trackers(lab, resolved.run.trackers)  # before metrics.jsonl is cut back
                lock = RunLock(run_dir).acquire("resume")
                loaded = (doc, load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt"))
        doc, state = distributed.broadcast_object(loaded)
        session = None
        try:
            with distributed.together():
                if not main:
                    doc, algo_cls, resolved = _resolve_doc(lab, doc)
                horizon = saved_horizon(state, int(doc["total_steps"]))
                session = Session(lab, algo_cls, resolved, run_dir, fresh=False, total_steps=horizon,
                                  observers=observers, run_loader=run_loader(lab))
            with distributed.together():
                session.restore(state)
                done = session.algo.global_step
                target = _resume_target(session, resolved, int(doc["total_steps"]), steps, epochs)
                STOP.raise_if_requested()
                if main:
                    truncate_metrics(run_dir, done)
                    doc["total_steps"] = target
                    doc["run"].update(resolved.run_section() if overrides else {})
                    doc["run"]["steps"], doc["run"]["epochs"] = (None, epochs) if epochs is not None else (target, None)
                    doc["world_size"] = session.ctx.world_size
                    write_config(run_dir, doc)
                    session.start(doc, resumed=True)
                STOP.raise_if_requested()
        except SetupInterrupted:
            if session is not None:
                session.tracker.finish({**read_summary(run_dir)} if main else {})
                session.close()
            if main:
                print("interrupted while setting up; the run is unchanged", file=sys.stderr)
            if lock is not None:
                lock.release()
            return None
        except BaseException:
            if session is not None:
                session.close()
            raise
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if main:
        print(f"resuming {run_dir} from step {done} to {target}" +
              (" (from best.pt)" if checkpoint == "best" else "") +
              (": its last evaluation" if target == done else ""), file=sys.stderr)
    return Opened(session, target, run_dir, lock)


def _resume_target(session: Session, resolved: Resolved, budget: int, steps: int | None, epochs: int | None) -> int:
    """The step a resumed run trains to: --epochs, --steps or its budget; a LabError when it is there already."""
    algo, done = session.algo, session.algo.global_step
    if epochs is not None:
        if not algo.steps_per_epoch:
            raise LabError(f"{session.algo_cls.name} counts --steps, not --epochs; resume with --steps N")
        target = epochs * algo.steps_per_epoch
    elif steps is not None:
        target = round_budget(session.algo_cls, resolved.algo, steps)
    else:
        target = budget
    # at the budget, a run a stop cut short in its last evaluation or media still ends them
    if target < done or (target == done and session.loop.complete):
        raise LabError(f"run '{session.run_dir}' is already at step {done} (target {target}); "
                       f"pass a larger --steps to train further")
    return target


def _restored(lab: Lab, run_dir: Path, checkpoint: str,
              reloaded: tuple[dict[str, Any], type[Algorithm], Resolved]) -> Session:
    """A one-process Session of `run_dir` with `checkpoint` loaded, for using a trained model."""
    doc, algo_cls, resolved = reloaded
    state = load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt")
    session = Session(lab, algo_cls, resolved, run_dir, fresh=False, purpose="eval", run_loader=run_loader(lab),
                      total_steps=saved_horizon(state, int(doc["total_steps"])))
    try:
        session.restore(state, rng=False)
    except BaseException:
        session.close()
        raise
    return session


def evaluate_run(lab: Lab, run_dir: Path, episodes: int | None = None, video: bool = False,
                 checkpoint: str = "latest", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`lab eval`: load a checkpoint, evaluate, write eval.json (and media), log to the trackers."""
    if distributed.launched():
        raise LabError("lab eval runs in one process; run it without torchrun")
    reloaded = _reload(lab, run_dir, {**(overrides or {}), **({"eval_episodes": episodes} if episodes is not None else {})})
    env_options = reloaded[2].env_options
    if "eval_sticky_actions" in (overrides or {}) and not hasattr(env_options, "eval_sticky_actions"):
        raise LabError(f"--eval-sticky-actions sets an Atari evaluation's repeat-action probability; {run_dir} ran "
                       f"{reloaded[2].run.env or reloaded[2].run.data}, so leave it out")
    lock = RunLock(run_dir).acquire("eval")
    try:
        session = _restored(lab, run_dir, checkpoint, reloaded)
        try:
            session.start(reloaded[0], resumed=True)
            metrics = session.evaluation()
            media = {k: str(p) for k, p in session.log_media().items()} if video else {}
            if video and not any(path.endswith(".mp4") for path in media.values()):
                shown = ", ".join(Path(path).name for path in media.values()) or "nothing"
                print(f"note: {session.algo_cls.name} runs make no video; --video wrote their media instead: {shown}",
                      file=sys.stderr)
            protocol = {"sticky_actions": env_options.eval_sticky_actions} \
                if hasattr(env_options, "eval_sticky_actions") else {}
            result = {"checkpoint": checkpoint, "global_step": session.algo.global_step,
                      "episodes": session.run.eval_episodes, **protocol, **metrics, "media": media}
            atomic_write_text(run_dir / "eval.json", json.dumps(result, indent=2) + "\n")
            session.tracker.finish({**read_summary(run_dir), **metrics})
        finally:
            session.close()
    finally:
        lock.release()
    return result


def load(lab: Lab, run_dir: Path, checkpoint: str = "best", device: str | None = None) -> Algorithm | AgentPolicy:
    """The trained algorithm of `run_dir`, ready to use: an agent as an `AgentPolicy`
    (`act(obs)` on what a user holds), any other algorithm as itself; see `lab.load`.

    The caller's random state and torch thread count are left as they were: loading a
    run inside another (a generator's reference classifier) or a script changes neither."""
    reloaded = _reload(lab, run_dir, {"device": device} if device is not None else {})
    with preserved_random_state():
        algo = _restored(lab, run_dir, checkpoint, reloaded).algo
    return AgentPolicy(algo) if isinstance(algo, Agent) else algo


def run_loader(lab: Lab) -> Callable[[Path, str, torch.device], Algorithm | AgentPolicy]:
    """`ctx.load_run` for the sessions these entry points make: `load` with these plugins."""
    return lambda run_dir, checkpoint, device: load(lab, run_dir, checkpoint, str(device))


@dataclass
class Run:
    """A run directory as `lab.train` returns it: where it is and how it ended."""

    dir: Path
    exit_code: int  # what `lab train` would exit with: 0 finished, 130 interrupted, 1 failed

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json: the last value of every metric, `status`, `best`, `best_step`, ..."""
        return read_summary(self.dir)

    @property
    def status(self) -> RunStatus:
        """How the run ended (`failed` when summary.json says nothing)."""
        return RunStatus.read(self.summary)

    def load(self, checkpoint: str = "best", device: str | None = None) -> Algorithm | AgentPolicy:
        """The trained algorithm (`lab.load(run.dir)`)."""
        import lab

        return lab.load(self.dir, checkpoint, device)


def train_in_process(lab: Lab, algo_name: str, settings: dict[str, Any],
                     config_file: dict[str, Any] | None = None) -> Run | None:
    """`lab.train`: `lab train` from Python, in this process, with Ctrl-C handled as the CLI
    handles it (the step finishes, a checkpoint is saved, the run ends `interrupted`).
    None when a Ctrl-C came before training started (no run directory is left)."""
    from lab.signals import handling_signals

    with handling_signals():
        code, run_dir = train_run(lab, algo_name, settings, config_file)
    return None if run_dir is None else Run(run_dir, code)
