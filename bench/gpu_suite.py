"""Every GPU figure in one run of at most 8 minutes, one JSON: for a GPU lent for ~15 minutes.

Cases (each calls the bench that owns the figure; nothing is re-measured here):
  dqn_breakout        DQN Breakout steps/s, lab against SB3 (bench/atari_sps.py)
  ppo_breakout_N      PPO Breakout steps/s at N = 8, 64, 256 envs (bench/pg_sps.py, lab side)
  sac_halfcheetah     SAC HalfCheetah steps/s, lab against SB3 (bench/offpolicy_sps.py)
  replay_sampling     replay memory and sampling on the device (bench/replay_memory.py)
  data_buffer         an MNIST epoch, data buffer against a DataLoader (bench/data_buffer.py)
  cnn_mnist           `cnn` seconds to 99% and 99.5% MNIST test accuracy (bench/mnist_speed.py)
  compile             the DQN update eager, torch.compile mode "default" (the lab's --compile
                      true) and mode "reduce-overhead" (CUDA graphs)
  host_syncs          host syncs per step of DQN, PPO and SAC in steady state, counted with
                      torch.cuda.set_sync_debug_mode("warn") (CUDA only)

Each case runs in a worker subprocess under its own time limit (a soft limit inside the case,
a hard kill of its process group after it), so a slow or hung case is recorded as
{"error": "timed out after N s"} and the rest still run; the limits add up to less than the
suite's budget (`--budget-s`, 480 s). Progress goes to stderr; stdout gets the JSON (also
written to `--out`): every case's result, skip reason or error, the machine, the wall time.

`--quick` runs the same cases with the smallest sizes each bench takes (seconds, not
minutes; `--device cpu --quick` is a CI test), all in one worker process unless
`--one-process-per-case`: on a 2-core CPU each fresh process pays ~6 s of imports.

A GPU machine without gymnasium, ale-py, SB3 or MuJoCo and without a registry:
    python bench/gpu_suite.py --prepare wheels/                    (here: cp312 wheels, MNIST)
    python bench/gpu_suite.py --install wheels/ --device cuda --out gpu.json   (there)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # the benches import each other as top-level modules (`_machine`)

BUDGET_S = 480.0
GRACE_S = 6.0  # per worker process: imports before its first case starts its clock
SEED = 1
# What the GPU machine lacks (its torch, numpy, pillow, opencv, tensorboard, pluggy, rich,
# pyyaml and imageio are there). MuJoCo before 3.10: a 7 MB wheel, where 3.10+ is 20-30 MB
# (4.x: 22 MB in mujoco-core and mujoco-studio), which HalfCheetah-v5 does not need.
REQUIREMENTS = ("gymnasium", "ale-py", "stable-baselines3", "mujoco>=3.1,<3.10")
BUILD = ("setuptools",)  # builds the project's editable install offline
# Comes with torch or with the GPU machine's own packages: never downloaded (torch's CUDA
# wheels alone are GBs).
PRESENT = ("torch", "triton", "numpy", "pillow", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
           "filelock")
PRESENT_PREFIXES = ("nvidia-", "cuda-")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
# Host syncs DQN's step may make outside the env: none (on a GPU `epsilon_greedy` runs the
# acting pass rather than read `explore.all()`; the actions' copy to the emulator is in env.step).
DQN_SYNC_ALLOWANCE = 0


class Skip(Exception):
    """A case that cannot run here (no CUDA, no MNIST): recorded as its reason, not a failure."""


class CaseTimeout(BaseException):
    """The soft limit of a case (a BaseException: benches that catch Exception must not swallow it)."""


# ----------------------------------------------------------------------------- helpers


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def require_cuda(device: str, what: str) -> None:
    if not device.startswith("cuda"):
        raise Skip(f"skipped: needs CUDA ({what})")


def mnist_dir(data_dir: Path | None) -> Path:
    """The data dir holding mnist/ (the four *-ubyte.gz files), or Skip with the reason."""
    from lab.plugins.datasets import MNIST_FILES

    names = [name for name, _ in MNIST_FILES.values()]
    if data_dir is None or not all((data_dir / "mnist" / name).is_file() for name in names):
        raise Skip(f"skipped: MNIST not found in {data_dir}/mnist (set LAB_DATA_DIR or --data-dir)")
    return data_dir


@contextlib.contextmanager
def agent_for(algo: str, env_id: str, device: str, config: dict[str, Any], compile_setting: str = "false",
              total_steps: int = 10**7) -> Iterator[Any]:
    """A lab agent built as the runner builds it (its registry, a throwaway run folder)."""
    import torch

    from lab.api import Tracker
    from lab.run.context import RunContext
    from lab.run.discovery import load_lab

    registry = load_lab().registry
    cls = registry.algorithm(algo)
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = RunContext(device=torch.device(device), seed=SEED, total_steps=total_steps, run_dir=Path(run_dir),
                      registry=registry, tracker=Tracker(), env_id=env_id, compile_setting=compile_setting)
        agent = cls(cls.Config(**config), ctx)
        try:
            yield agent
        finally:
            agent.close()
            ctx.close_envs()


def dqn_settings(learning_starts: int, buffer_size: int) -> dict[str, Any]:
    """atari_sps's DQN (RL Zoo's Atari DQN, fixed epsilon 0.01) with a smaller fill."""
    import atari_sps

    return atari_sps.hyperparameters(argparse.Namespace(learning_starts=learning_starts, buffer_size=buffer_size,
                                                        epsilon=0.01))


def run_to(agent: Any, step: int) -> None:
    """train_step until `step`, popping episodes as the runner does."""
    while agent.global_step < step:
        agent.train_step()
        agent.ctx.pop_episodes()


# ----------------------------------------------------------------------------- cases


def dqn_breakout(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """atari_sps's lab and SB3 windows at 1 env (the bench's defaults, one round, full size);
    quick: a 64-step fill and eager (compiling the Nature CNN takes a CPU ~30 s)."""
    import atari_sps
    import torch

    sizes = dict(learning_starts=64, warmup_steps=8, steps=32, buffer_size=1_000, compile="false") if quick else \
        dict(learning_starts=5_000, warmup_steps=1_000, steps=2_000, buffer_size=100_000, compile="auto")
    args = argparse.Namespace(epsilon=0.01, **sizes)
    lab = atari_sps.lab_dqn(args, torch.device(device), 1)
    sb3 = atari_sps.sb3_dqn(args, torch.device(device), 1)
    return {"figures": {"lab_sps": lab["sps"], "sb3_sps": sb3["sps"], "speedup": lab["sps"] / sb3["sps"]},
            "lab": lab, "sb3": sb3, "sizes": sizes}


def ppo_breakout(num_envs: int) -> Callable[[str, bool, Path | None], dict[str, Any]]:
    def run(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
        """pg_sps's lab side on its `breakout` case (CleanRL's ppo_atari) at `num_envs`; quick:
        1, 2 or 4 envs and 4-step rollouts (a CPU resets an Atari env in ~0.2 s)."""
        import pg_sps

        name = f"breakout_{num_envs}"
        if quick:
            envs = {8: 1, 64: 2, 256: 4}[num_envs]
            sizes = dict(num_envs=envs, n_steps=4, batch_size=4 * envs, n_epochs=1)
            rollouts = 1
        else:
            sizes = dict(num_envs=num_envs)
            rollouts = {8: 4, 64: 2, 256: 1}[num_envs]
        pg_sps.CASES[name] = {**pg_sps.CASES["breakout"], **sizes}  # a row of its own table
        sps, collect_share = pg_sps.lab_sps(name, rollouts, device, SEED)
        return {"figures": {"lab_sps": sps}, "collect_share": collect_share, "timed_rollouts": rollouts,
                "settings": pg_sps.settings(name)}
    return run


def sac_halfcheetah(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """offpolicy_sps's SAC sides, each in its own fresh process as the bench runs them; quick:
    in this process, 2 warm-up and 8 timed steps (the 1,000 random steps are the bench's)."""
    import offpolicy_sps

    if quick:
        warmup, steps = 2, 8
        lab, sb3 = (side("sac", warmup, steps, device, SEED) for side in (offpolicy_sps.lab_sps, offpolicy_sps.sb3_sps))
    else:
        warmup, steps = 200, 1_000
        lab, sb3 = (offpolicy_sps.measure(side, "sac", warmup, steps, device, SEED) for side in ("lab", "sb3"))
    return {"figures": {"lab_sps": lab["sps"], "sb3_sps": sb3["sps"], "speedup": lab["sps"] / sb3["sps"]},
            "lab": lab, "sb3": sb3, "warmup": warmup, "timed_steps": steps}


def timed_steps(population: Any, untimed: int, timed: int, device: str) -> float:
    """Seconds of `timed` training steps of a population, after `untimed` ones (fill, warm-up)."""
    import time

    for _ in range(untimed):
        population.train_step()
    sync(device)
    start = time.perf_counter()
    for _ in range(timed):
        population.train_step()
    sync(device)
    return time.perf_counter() - start


def ppo_population(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """A population of PPO HalfCheetah-v5 members with SB3's settings (pg_sps's halfcheetah case,
    `--seeds 1-N --vectorize`) at N = 1, 8 and 64: steps per second per member and in all,
    after one untimed rollout and update; quick: N = 1 and 2, 1 env, 16-step rollouts."""

    import pg_sps
    import torch

    from lab.rl.population import Population

    settings = pg_sps.settings("halfcheetah")
    sizes = [1, 2] if quick else [1, 8, 64]
    if quick:
        settings.update(num_envs=1, n_steps=16, batch_size=16, n_epochs=1)
    rollouts = 1 if quick else 2
    figures: dict[str, float] = {}
    for members in sizes:
        with contextlib.ExitStack() as stack:
            agents = [stack.enter_context(agent_for("ppo", "HalfCheetah-v5", device, settings)) for _ in range(members)]
            seconds = timed_steps(Population(agents, update_threads=torch.get_num_threads()), 1, rollouts, device)
        steps = rollouts * settings["n_steps"] * settings["num_envs"]
        figures[f"sps_per_member_{members}"] = steps / seconds
        figures[f"sps_total_{members}"] = members * steps / seconds
    return {"figures": figures, "settings": settings, "timed_rollouts": rollouts}


def dqn_population(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """A population of DQN Breakout members with the atari100k-drq preset (DrQ(eps): one
    batch-32 gradient step per agent step) at N = 1, 4 and 16: agent steps per second per
    member and in all, after a 200-step fill and 10 untimed steps; quick: N = 1 and 2, a
    40-step fill. On a CPU a member gains nothing (bench/population_step.py); this is the GPU's curve."""

    import torch

    from lab.rl.q_population import QPopulation
    from lab.run.discovery import load_lab

    preset = load_lab().registry.algorithm("dqn").presets["atari100k-drq"]
    fill, timed = (40, 4) if quick else (200, 100)
    settings = {key: value for key, value in preset.items() if key not in
                ("steps", "sticky_actions", "eval_sticky_actions", "eval_episodes", "eval_interval", "checkpoint_interval")}
    settings.update(buffer_size=2 * fill + timed, learning_starts=fill)
    figures: dict[str, float] = {}
    for members in [1, 2] if quick else [1, 4, 16]:
        with contextlib.ExitStack() as stack:
            agents = [stack.enter_context(agent_for("dqn", "BreakoutNoFrameskip-v4", device, settings,
                                                    total_steps=100_000)) for _ in range(members)]
            seconds = timed_steps(QPopulation(agents, update_threads=torch.get_num_threads()),
                                  fill + (2 if quick else 10), timed, device)
        figures[f"sps_per_member_{members}"] = timed / seconds
        figures[f"sps_total_{members}"] = members * timed / seconds
    return {"figures": figures, "settings": settings, "timed_steps": timed}


def replay_sampling(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """replay_memory's bytes per transition and batches of 32 per second on `device`."""
    import replay_memory

    capacity, fill, rounds, seconds = (1_000, 600, 1, 0.1) if quick else (100_000, 20_000, 3, 0.5)
    memory = replay_memory.memory(capacity, device)
    sampling = replay_memory.sampling(fill, device, rounds, seconds)
    figures = {**sampling, "bytes_per_transition": memory["bytes_per_transition"],
               "sampling_speedup": sampling["sample_batches_per_s"] / sampling["sb3_sample_batches_per_s"]}
    return {"figures": figures, "memory": memory, "capacity": capacity, "fill": fill, "rounds": rounds}


def data_buffer(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """data_buffer's main (it has no smaller function): one round quick, three otherwise."""
    import data_buffer as bench

    data = mnist_dir(data_dir)
    argv = ["data_buffer.py", "--json", "--data-dir", str(data), "--device", device, "--rounds", "1" if quick else "3"]
    out, saved = io.StringIO(), sys.argv
    try:
        sys.argv = argv
        with contextlib.redirect_stdout(out):
            bench.main()
    finally:
        sys.argv = saved
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    keys = ("epoch_s", "dataloader_epoch_s", "speedup", "epoch_with_crop_s")
    return {"figures": {k: result[k] for k in keys}, "bench": result}


def cnn_mnist(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """mnist_speed's lab side, seed 1, to 99% and 99.5% (6 epochs: the LR horizon); quick:
    4 steps, one evaluation, no warm-up (the targets are then unreached: null)."""
    import mnist_speed
    import torch

    data = mnist_dir(data_dir)
    targets = [0.99, 0.995]
    if quick:
        max_epochs, eval_every = 4 / 429, 4 / 429  # 429 steps an epoch
    else:
        max_epochs, eval_every = 6.0, 0.25
        mnist_speed.warm_up(data, torch.device(device), SEED, "auto")
    run = mnist_speed.run("lab", data, torch.device(device), targets, max_epochs, eval_every, SEED, "auto")
    figures = {"seconds_per_step": run["train_seconds"] / run["steps"], "final_accuracy": run["final_accuracy"]}
    figures.update({f"seconds_to_{k}": v for k, v in run["seconds_to"].items() if v is not None})
    return {"figures": figures, "seconds_to": run["seconds_to"], "steps": run["steps"], "curve": run["curve"],
            "max_epochs": max_epochs}


def compile_modes(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """The DQN update (sample, td_loss, backward, clip, Adam) per mode, on one filled buffer:
    eager and mode "default" through the lab's --compile (lab.run.compile), mode
    "reduce-overhead" (CUDA graphs) by torch.compile directly. Quick: CartPole's MLP (a
    CPU compiles the Nature CNN in ~30 s), eager and default only."""
    import torch

    from lab.run.compile import unavailable_reason

    env_id, config = ("CartPole-v1", {**dqn_settings(64, 1_000), "net_arch": (64, 64)}) if quick else \
        ("BreakoutNoFrameskip-v4", dqn_settings(1_000, 10_000))
    warm, timed = (2, 5) if quick else (20, 300)
    modes: dict[str, Any] = {}
    with agent_for("dqn", env_id, device, config) as agent:
        run_to(agent, config["learning_starts"] + 4)
        ctx = agent.ctx

        def lab_compile(setting: str) -> Callable[..., Any]:
            ctx.compile_setting = setting
            return ctx.compile(agent.td_loss, name=f"dqn update ({setting})", calls=lambda: 10**7, pays_on_cpu=True)

        def reduce_overhead() -> Callable[..., Any]:
            compiled = torch.compile(agent.td_loss, mode="reduce-overhead", dynamic=False)

            def step(*args: Any) -> Any:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are done with
                return compiled(*args)
            return step

        builders: dict[str, Callable[[], Callable[..., Any]]] = {
            "eager": lambda: lab_compile("false"), "default": lambda: lab_compile("true"),
            "reduce_overhead": reduce_overhead}
        for mode, build in builders.items():
            if mode != "eager" and unavailable_reason():
                modes[mode] = f"skipped: {unavailable_reason()}"
                continue
            if mode == "reduce_overhead" and not device.startswith("cuda"):
                modes[mode] = "skipped: needs CUDA"
                continue
            try:
                agent.compiled_td_loss = build()
                start = time.perf_counter()
                for _ in range(warm):
                    agent.gradient_step()
                sync(device)
                first = time.perf_counter() - start
                start = time.perf_counter()
                for _ in range(timed):
                    agent.gradient_step()
                sync(device)
                seconds = time.perf_counter() - start
                if mode == "default" and not agent.compiled_td_loss.compiled:  # lab.run.compile fell back
                    modes[mode] = "error: torch.compile failed, the update ran eagerly (its note is on stderr)"
                else:  # the compile falls in the warm-up
                    modes[mode] = {"ms_per_update": 1e3 * seconds / timed, "warmup_s": first}
            except Exception as exc:  # one mode failing must not hide the others
                modes[mode] = f"error: {type(exc).__name__}: {str(exc).strip()[:300]}"
    timed_modes = {m: r["ms_per_update"] for m, r in modes.items() if isinstance(r, dict)}
    figures = {f"{m}_ms_per_update": ms for m, ms in timed_modes.items()}
    if "eager" in timed_modes:
        figures.update({f"{m}_speedup": timed_modes["eager"] / ms for m, ms in timed_modes.items() if m != "eager"})
    return {"figures": figures, "modes": modes, "env": env_id, "timed_updates": timed, "warmup_updates": warm}


class SyncCounter:
    """Host syncs that torch.cuda.set_sync_debug_mode("warn") reports, total and inside the
    methods `attribute` wraps. `detect=False` (a CPU) runs the same steps and counts nothing."""

    def __init__(self, detect: bool) -> None:
        self.detect = detect
        self.inside: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._records: list[warnings.WarningMessage] = []

    def __enter__(self) -> SyncCounter:
        self._catch = warnings.catch_warnings(record=True)
        self._records = self._catch.__enter__()
        warnings.simplefilter("ignore")
        warnings.filterwarnings("always", message=".*synchroniz")
        if self.detect:
            import torch

            self._previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.detect:
            import torch

            torch.cuda.set_sync_debug_mode(self._previous)
        self._catch.__exit__(*exc)

    @property
    def total(self) -> int:
        return len(self._records)

    def attribute(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        self.inside[label] = self.calls[label] = 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            before = self.total
            try:
                return original(*args, **kwargs)
            finally:
                self.inside[label] += self.total - before
                self.calls[label] += 1
        setattr(owner, name, counted)


def dqn_syncs(device: str, quick: bool = True) -> dict[str, Any]:
    """Host syncs in steady-state DQN Breakout train_steps (eager: what compiling may hide):
    per step outside the env (allowance DQN_SYNC_ALLOWANCE) and per gradient step (none)."""
    config = dqn_settings(64 if quick else 1_000, 10_000)
    steps = 8 if quick else 64
    with agent_for("dqn", "BreakoutNoFrameskip-v4", device, config) as agent:
        run_to(agent, config["learning_starts"] + 16)
        with SyncCounter(device.startswith("cuda")) as counter:
            counter.attribute(agent.env, "step", "env_step")
            counter.attribute(agent, "gradient_step", "gradient_step")
            run_to(agent, agent.global_step + steps)
    return {"steps": steps, "per_step": counter.total / steps,
            "outside_env_per_step": (counter.total - counter.inside["env_step"]) / steps,
            "env_step_per_step": counter.inside["env_step"] / steps,
            "per_gradient_step": counter.inside["gradient_step"] / max(1, counter.calls["gradient_step"]),
            "gradient_steps": counter.calls["gradient_step"], "allowance_outside_env_per_step": DQN_SYNC_ALLOWANCE}


def ppo_syncs(device: str, quick: bool = True) -> dict[str, Any]:
    """Host syncs in one steady-state PPO Breakout rollout and update (8 envs, 128 steps): per
    vector step outside the env (the once-a-rollout metrics after the update included) and
    in the update (its metrics are read once per update, on purpose)."""
    import pg_sps

    envs, n_steps = (2, 4) if quick else (8, 128)
    config = {**pg_sps.settings("breakout"), "num_envs": envs, "n_steps": n_steps,
              **({"batch_size": envs * n_steps, "n_epochs": 1} if quick else {})}
    with agent_for("ppo", "BreakoutNoFrameskip-v4", device, config) as agent:
        agent.train_step()  # start-up
        with SyncCounter(device.startswith("cuda")) as counter:
            counter.attribute(agent.env, "step", "env_step")
            counter.attribute(agent, "update", "update")
            agent.train_step()
    collect = counter.total - counter.inside["env_step"] - counter.inside["update"]
    return {"vector_steps": n_steps, "num_envs": envs, "outside_env_per_vector_step": collect / n_steps,
            "env_step_per_vector_step": counter.inside["env_step"] / n_steps,
            "per_update": counter.inside["update"], "per_rollout_and_update": counter.total}


def sac_syncs(device: str, quick: bool = True) -> dict[str, Any]:
    """Host syncs in steady-state SAC HalfCheetah train_steps (no sync in the step, sac.py says)."""
    import offpolicy_sps

    config = {**offpolicy_sps.SETTINGS["sac"], "learning_starts": 100 if quick else 1_000}
    steps = 8 if quick else 64
    with agent_for("sac", "HalfCheetah-v5", device, config) as agent:
        run_to(agent, config["learning_starts"] + 16)
        with SyncCounter(device.startswith("cuda")) as counter:
            counter.attribute(agent.env, "step", "env_step")
            counter.attribute(agent, "gradient_step", "gradient_step")
            run_to(agent, agent.global_step + steps)
    return {"steps": steps, "outside_env_per_step": (counter.total - counter.inside["env_step"]) / steps,
            "env_step_per_step": counter.inside["env_step"] / steps,
            "per_gradient_step": counter.inside["gradient_step"] / max(1, counter.calls["gradient_step"])}


def host_syncs(device: str, quick: bool, data_dir: Path | None) -> dict[str, Any]:
    """Syncs per step by agent. On a CPU the same steps run (so the code is known to work)
    and the case is skipped: there is no sync detector without CUDA."""
    results = {name: count(device, quick) for name, count in
               (("dqn", dqn_syncs), ("ppo", ppo_syncs), ("sac", sac_syncs))}
    require_cuda(device, "torch.cuda.set_sync_debug_mode; the DQN, PPO and SAC steps ran")
    figures = {  # syncs: 0 is the aim, so unlike other cases' figures these may be 0
        "dqn_outside_env_per_step": results["dqn"]["outside_env_per_step"],
        "dqn_per_gradient_step": results["dqn"]["per_gradient_step"],
        "ppo_outside_env_per_vector_step": results["ppo"]["outside_env_per_vector_step"],
        "ppo_per_update": results["ppo"]["per_update"],
        "sac_outside_env_per_step": results["sac"]["outside_env_per_step"],
        "sac_per_gradient_step": results["sac"]["per_gradient_step"]}
    return {"figures": figures, **results}


CaseFn = Callable[[str, bool, Path | None], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    run: CaseFn
    limit_s: float  # on a GPU machine, full sizes
    quick_limit_s: float


CASES: dict[str, Case] = {
    "dqn_breakout": Case(dqn_breakout, 75, 30),
    "ppo_breakout_8": Case(ppo_breakout(8), 20, 20),
    "ppo_breakout_64": Case(ppo_breakout(64), 25, 20),
    "ppo_breakout_256": Case(ppo_breakout(256), 45, 20),
    "sac_halfcheetah": Case(sac_halfcheetah, 45, 30),
    "ppo_population": Case(ppo_population, 90, 20),
    "dqn_population": Case(dqn_population, 90, 30),
    "replay_sampling": Case(replay_sampling, 20, 20),
    "data_buffer": Case(data_buffer, 20, 30),
    "cnn_mnist": Case(cnn_mnist, 55, 30),
    "compile": Case(compile_modes, 70, 45),
    "host_syncs": Case(host_syncs, 35, 30),
}


# ----------------------------------------------------------------------------- worker


def on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


def worker(names: list[str], limits: dict[str, float], device: str, quick: bool, data_dir: Path | None,
           results: Path) -> None:
    """Run cases one after another, appending a JSON line as each starts and ends."""
    signal.signal(signal.SIGALRM, on_alarm)
    if quick and device == "cpu":
        import torch

        # a CI box is rarely idle: a second intra-op thread waiting on a busy core makes every
        # op stall (a SAC step took 0.8 s instead of ~15 ms on the shared 2-core VM)
        torch.set_num_threads(1)
    with results.open("a", encoding="utf-8") as out:
        def write(record: dict[str, Any]) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        for name in names:
            write({"case": name, "started": True})
            print(f"[gpu_suite] {name}: started (limit {limits[name]:.0f} s)" if limits[name] else
                  f"[gpu_suite] {name}: started (no limit)", file=sys.stderr, flush=True)
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, limits[name])  # 0: no timer
            try:
                record: dict[str, Any] = {"result": CASES[name].run(device, quick, data_dir)}
            except CaseTimeout:
                record = {"error": f"timed out after {limits[name]:g} s"}
            except Skip as skip:
                record = {"skipped": str(skip)}
            except Exception as exc:
                record = {"error": f"{type(exc).__name__}: {exc}"[:2000],
                          "traceback": traceback.format_exc()[-3000:]}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            record.update(case=name, wall_s=round(time.perf_counter() - start, 2))
            write(record)
            outcome = next(k for k in ("result", "skipped", "error") if k in record)
            print(f"[gpu_suite] {name}: {outcome} in {record['wall_s']:.1f} s", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- suite


def run_group(names: list[str], limits: dict[str, float], args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """One worker process for `names`; kills its whole process group at `timeout` (and after it
    exits: a bench's own subprocesses must not outlive it)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--cases", ",".join(names),
                   "--device", args.device, "--results", str(results),
                   "--limits", ",".join(f"{n}={limits[n]:.1f}" for n in names)]
        command += ["--quick"] if args.quick else []
        command += ["--data-dir", str(args.data_dir)] if args.data_dir else []
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(command, env=env, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    out: dict[str, Any] = {}
    started = None
    for record in records:
        name = record.pop("case")
        if record.pop("started", False):
            started = name
        else:
            out[name], started = record, None
    for name in names:
        if name in out:
            continue
        if name == started:
            out[name] = {"error": f"timed out after {timeout:.0f} s" if timed_out else
                         f"the worker died (exit code {proc.returncode}) during this case"}
        else:
            out[name] = {"error": "not run: the worker process was stopped before this case"}
    return out


def install(wheels: Path) -> dict[str, Any]:
    """Offline: the suite's wheels from `wheels`, then the project itself without dependencies."""
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]
    log: dict[str, Any] = {}
    for label, command in (("wheels", pip + list(REQUIREMENTS)), ("project", [*pip, "--no-deps", "-e", str(ROOT)])):
        print(f"[gpu_suite] install {label}: {' '.join(command)}", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        log[label] = {"rc": done.returncode, "tail": (done.stdout + done.stderr)[-1500:]}
        if done.returncode:
            print(f"[gpu_suite] install {label} failed:\n{log[label]['tail']}", file=sys.stderr, flush=True)
    return log


def prepare(folder: Path, data_dir: Path | None) -> int:
    """Here, with a registry: resolve the suite's packages for CPython 3.12 on x86-64 Linux,
    drop what the GPU machine has (torch and its dependencies), download the rest, copy MNIST."""
    folder.mkdir(parents=True, exist_ok=True)
    target = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--only-binary=:all:"]
    for platform in PLATFORMS:
        target += ["--platform", platform]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "--target", str(Path(tmp) / "target"), *target, *REQUIREMENTS, *BUILD],
                       check=True)
        resolved = json.loads(report.read_text())["install"]
    pins = []
    for item in resolved:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        key = name.lower().replace("_", "-")
        if key in PRESENT or key.startswith(PRESENT_PREFIXES):
            continue
        pins.append(f"{name}=={version}")
    print(f"[gpu_suite] downloading {len(pins)} wheels: {' '.join(sorted(pins))}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), *target,
                    *pins], check=True)
    wheel_bytes = sum(p.stat().st_size for p in folder.glob("*.whl"))
    mnist_bytes = 0
    if data_dir is not None and (data_dir / "mnist").is_dir():
        shutil.copytree(data_dir / "mnist", folder / "mnist", dirs_exist_ok=True)
        mnist_bytes = sum(p.stat().st_size for p in (folder / "mnist").iterdir())
    requirements = " ".join(f"'{r}'" if "<" in r or ">" in r else r for r in REQUIREMENTS)
    (folder / "INSTALL.txt").write_text(
        "Offline install on the GPU machine (Python 3.12, CUDA torch already there):\n\n"
        f"  python -m pip install --no-index --find-links {folder.name} {requirements}\n"
        f"  python -m pip install --no-index --find-links {folder.name} --no-deps -e .\n\n"
        f"or let the suite do both and run:\n\n"
        f"  python bench/gpu_suite.py --install {folder.name} --device cuda --out gpu.json\n\n"
        f"{folder.name}/mnist (when present) is the MNIST the suite then reads.\n", encoding="utf-8")
    print(json.dumps({"wheels": len(pins), "wheels_mb": round(wheel_bytes / 1e6, 1),
                      "mnist_mb": round(mnist_bytes / 1e6, 1), "folder": str(folder)}))
    return 0


def default_data_dir(install_dir: Path | None) -> Path | None:
    """$LAB_DATA_DIR, else the prepared folder's mnist/, else the checkout's shared/datasets."""
    if os.environ.get("LAB_DATA_DIR"):
        return Path(os.environ["LAB_DATA_DIR"])
    for candidate in ([install_dir] if install_dir else []) + [ROOT / "shared" / "datasets"]:
        if (candidate / "mnist").is_dir():
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the figures) or cpu (--quick: a check of the code)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes: the same code paths in under a minute")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole suite's wall-time budget")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases to run (default: all)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding mnist/ (default: $LAB_DATA_DIR, the --install folder, shared/datasets)")
    parser.add_argument("--no-limits", action="store_true",
                        help="no time limit per case (a check of the code on a busy machine, where a case's time says "
                             "nothing); --budget-s still bounds the whole suite")
    parser.add_argument("--one-process-per-case", action="store_true",
                        help="with --quick: a worker per case, as a full run does")
    parser.add_argument("--prepare", type=Path, metavar="DIR",
                        help="download here the cp312 wheels the suite needs (and copy MNIST) for an offline GPU machine")
    parser.add_argument("--install", type=Path, metavar="DIR",
                        help="on the GPU machine: pip install DIR's wheels offline and the project (--no-deps), then run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limits", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = default_data_dir(args.install)
    names = [n for n in args.cases.split(",") if n]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")

    if args.worker:
        limits = {n: float(v) for n, v in (item.split("=") for item in args.limits.split(",") if item)}
        worker(names, limits, args.device, args.quick, args.data_dir, args.results)
        return 0
    if args.prepare:
        return prepare(args.prepare.resolve(), args.data_dir)

    report: dict[str, Any] = {"suite": "gpu_suite", "quick": args.quick, "device": args.device,
                              "budget_s": args.budget_s}
    if args.install:  # before the budget's clock: installing is no figure
        begun = time.perf_counter()
        report["install"] = install(args.install.resolve())
        report["install_s"] = round(time.perf_counter() - begun, 1)
    start = time.perf_counter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device (use --device cpu --quick to check the code)")
    from _machine import describe

    report["machine"] = describe(args.device)
    limits = {n: 0.0 if args.no_limits else CASES[n].quick_limit_s if args.quick else CASES[n].limit_s for n in names}
    groups = [names] if args.quick and not args.one_process_per_case else [[n] for n in names]
    cases: dict[str, Any] = {}
    for group in groups:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 5:
            cases.update({n: {"skipped": "skipped: the suite's budget was spent"} for n in group})
            continue
        timeout = left if args.no_limits else min(sum(limits[n] for n in group) + GRACE_S, left)
        cases.update(run_group(group, limits, args, timeout))
    report["cases"] = {n: {"limit_s": limits[n], **cases[n]} for n in names}
    report["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    failed = [n for n, c in report["cases"].items() if "error" in c]
    print(f"[gpu_suite] {len(names) - len(failed)}/{len(names)} cases without error in {report['wall_s']} s"
          + (f"; errors: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
