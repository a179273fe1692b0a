"""`lab` command line: plugins, train, resume, eval, runs, compare, sweep, and the
commands plugins register (`register_commands`: `lab sample` is the generators').

Every user mistake becomes one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lab.api import LabError, flag
from lab.api.errors import close_matches, one_line
from lab.experiments.launch import LAUNCHERS
from lab.run.run_config import RunConfig
from lab.run.settings import config_fields, load_yaml_file
from lab.signals import STOP, SetupInterrupted, stop_when_orphaned  # first: Ctrl-C handling

if TYPE_CHECKING:
    from collections.abc import Callable

    from lab.run.events import Observer

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises LabError instead of printing usage and exiting, and takes no
    abbreviations (`--wandb` must never be read as `--wandb-agent`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise LabError(f"{message}; run `{self.prog} --help` for usage")


def _load(args: argparse.Namespace):
    """Load the plugins: built-ins, installed packages and the local folder the user names
    (`--plugins-dir`, `$LAB_PLUGINS_DIR`); never a folder a run directory names."""
    from lab.run.discovery import load_lab

    lab = getattr(args, "loaded", None) or load_lab(args.plugins_dir)
    for warning in lab.warnings:
        print(f"warning: {one_line(warning)}", file=sys.stderr)
    if args.command != "plugins":
        for info in lab.failures:
            failure = f"plugin '{info.name}' failed to load ({info.error}); the others are loaded"
            print(f"warning: {one_line(failure)}", file=sys.stderr)
    return lab


def _setting_groups(algo_cls: type, registry: Any) -> list[tuple[str, type]]:
    """(title, settings class) for every flag `lab train ALGO` takes: the runner's, each
    tracker's, each env family's (they apply to that family's envs) and the algorithm's."""
    groups = [("run settings", RunConfig)]
    groups += [(f"{name} tracker settings", cls) for name, cls in registry.tracker_options().items()]
    groups += [(f"{family.name} env settings (for {family.name} envs only)", family.options)
               for family in registry.families() if family.options is not None]
    return [*groups, (f"{algo_cls.name} settings", algo_cls.Config)]


def _algorithm_parser(algo_cls: type, registry: Any) -> _Parser:
    parser = _Parser(prog=f"lab train {algo_cls.name}", description=(algo_cls.__doc__ or "").strip(),
                     allow_abbrev=False, argument_default=argparse.SUPPRESS,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="settings file (flags win over it)")
    seen: set[str] = set()
    for title, cls in _setting_groups(algo_cls, registry):
        group = parser.add_argument_group(title)
        for name, tp, default, help_text in config_fields(cls):
            if name in seen:
                continue
            seen.add(name)
            extra: dict[str, Any] = {"nargs": "?", "const": "true"} if tp is bool else {}
            group.add_argument(f"--{flag(name)}", dest=name, metavar="VALUE",
                               help=f"{help_text} (default: {default})".strip(), **extra)
    if algo_cls.presets:
        lines = ["presets, applied for a matching --env/--data (exact ids, then globs, then the env's family) "
                 "or by name with --preset NAME; steps is the default budget:"]
        for key, values in algo_cls.presets.items():
            shown = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in values.items())
            lines.append(textwrap.fill(f"{key}: {shown}", width=100, initial_indent="  ", subsequent_indent="      "))
        parser.epilog = "\n".join(lines)
    return parser


def _negative_numbers_joined(argv: list[str]) -> list[str]:
    """`--learning-rate -1e-3` as `--learning-rate=-1e-3`: argparse takes a token like `-1e-3`
    for a flag, so the number would never reach the setting's own check."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-") and _is_number(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text.replace("_", ""))
    except ValueError:
        return False
    return True


def _parse_algorithm_flags(algo_cls: type, argv: list[str], registry: Any) -> tuple[dict[str, Any], str | None]:
    # `--learning_rate=3e-4` (W&B sweep agents write field names) means `--learning-rate=3e-4`
    argv = [t.split("=", 1)[0].replace("_", "-") + t[len(t.split("=", 1)[0]):] if t.startswith("--") else t
            for t in _negative_numbers_joined(argv)]
    parser = _algorithm_parser(algo_cls, registry)
    known = {f"--{flag(n)}" for _, cls in _setting_groups(algo_cls, registry) for n, *_ in config_fields(cls)}
    known |= {f"--{alias.replace('_', '-')}" for alias in getattr(algo_cls.Config, "aliases", {})} | {"--config"}
    for alias in getattr(algo_cls.Config, "aliases", {}):
        parser.add_argument(f"--{flag(alias)}", dest=alias, metavar="VALUE", help=argparse.SUPPRESS)
    for token in argv:
        if token.startswith("--") and token not in ("--help",) and token.split("=", 1)[0] not in known:
            name = token.split("=", 1)[0]
            raise LabError(f"unknown flag {name} for {algo_cls.name}{close_matches(name, known)}; "
                           f"run `lab train {algo_cls.name} --help` to list flags")
    values = vars(parser.parse_args(argv))
    config_file = values.pop("config", None)
    return values, config_file


def cmd_plugins(args: argparse.Namespace) -> int:
    lab = _load(args)
    registered = lab.registry.by_plugin()
    rows = []
    for info in lab.plugins:
        rows.append({
            "name": info.name,
            "source": info.source,
            "version": info.version,
            "hooks": info.hooks,
            "registered": [{"name": r.name, "kind": r.kind} for r in registered.get(info.name, [])],
            **({"error": info.error} if info.error else {}),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="arcade-lab plugins")
    for column in ("plugin", "version", "source", "hooks", "registered"):
        table.add_column(column)
    for row in rows:
        things = ", ".join(f"{r['name']} ({r['kind']})" for r in row["registered"])
        if row.get("error"):
            things = f"[red]failed to load: {row['error']}[/red]"
        table.add_row(row["name"], row["version"] or "-", row["source"], "\n".join(row["hooks"]), things)
    Console().print(table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lab.run import entry

    lab = _load(args)
    algo_cls = lab.registry.algorithm(args.algo)
    if "-h" in args.rest or "--help" in args.rest:
        _algorithm_parser(algo_cls, lab.registry).print_help()
        return 0
    rest, seeds = _pop_option(args.rest, "--seeds")
    rest, parallel = _pop_option(rest, "--parallel")
    rest, members = _pop_option(rest, "--members")
    vectorize = "--vectorize" in rest
    rest = [token for token in rest if token != "--vectorize"]
    if members is not None:
        if not vectorize or seeds is not None or rest:
            raise LabError("--members (what `lab sweep --vectorize` starts) goes with --vectorize alone: "
                           "lab train ALGO --vectorize --members '[[\"--flag=value\", ...], ...]'")
        return _train_members(lab, algo_cls, members)
    launch: dict[str, Any] = {}
    for option in ("--launcher", "--partition", "--time", "--gpus-per-worker", "--cpus-per-worker", "--mem",
                   "--slurm-folder"):
        rest, launch[option[2:].replace("-", "_")] = _pop_option(rest, option)
    cli, config_file = _parse_algorithm_flags(algo_cls, rest, lab.registry)
    file_values = load_yaml_file(config_file) if config_file else None
    if seeds is None:
        if vectorize:
            raise LabError("--vectorize trains the runs of --seeds as one population: pass --seeds too (e.g. 1-8)")
        if parallel is not None:
            raise LabError("--parallel goes with --seeds (or lab sweep): one run uses one process")
        if any(value is not None for value in launch.values()):
            raise LabError("--launcher goes with --seeds (or lab sweep): one run is one process; "
                           "submit it with sbatch, or pass --seeds S")
        return entry.train(lab, args.algo, cli, file_values, _sweep_observers())
    if launch["launcher"] not in (None, *LAUNCHERS):
        raise LabError(f"--launcher takes {' or '.join(LAUNCHERS)}; got '{launch['launcher']}'")
    return _train_seeds(lab, algo_cls, rest, cli, file_values, seeds, parallel, launch, vectorize)


def _sweep_observers() -> list[Observer]:
    """A bayes sweep starts each trial as `lab train` (or `lab resume`) with its study named in
    the process's environment: that trial's pruner watches the run."""
    from lab.experiments.bayes import TrialPruner

    pruner = TrialPruner.from_environment()
    return [pruner] if pruner is not None else []


def _pop_option(tokens: list[str], name: str) -> tuple[list[str], str | None]:
    """Remove `name VALUE` / `name=VALUE` from tokens; (the rest, VALUE or None)."""
    rest, value, i = [], None, 0
    while i < len(tokens):
        token = tokens[i]
        if token == name:
            if i + 1 >= len(tokens):
                raise LabError(f"{name} needs a value")
            value, i = tokens[i + 1], i + 2
            continue
        if token.startswith(name + "="):
            value = token.split("=", 1)[1]
        else:
            rest.append(token)
        i += 1
    return rest, value


def _train_seeds(lab: Any, algo_cls: type, rest: list[str], cli: dict[str, Any], file_values: dict[str, Any] | None,
                 seeds_text: str, parallel_text: str | None, launch: dict[str, Any], vectorize: bool = False) -> int:
    """`lab train ... --seeds 1,2,3 [--parallel N | --vectorize]`: one run per seed, named STEM-sSEED, one
    W&B group; a process each (N at a time), or all in this process as one population (`--vectorize`)."""
    from lab.distributed import launched
    from lab.experiments.jobs import (
        Job,
        continue_or_start,
        overall_exit_code,
        parse_parallel,
        parse_seeds,
        results_table,
        run_jobs,
    )
    from lab.run.rundir import default_run_name
    from lab.run.settings import resolve

    if launched():
        raise LabError("--seeds starts its own processes: run it without torchrun")
    seeds, parallel = parse_seeds(seeds_text), parse_parallel(parallel_text)
    if vectorize:
        from lab.rl.population import check_stackable

        check_stackable(algo_cls)
    if "seed" in cli:
        raise LabError("--seeds and --seed do not mix: --seeds 1,2,3 runs one run per seed")
    resolved = resolve(algo_cls, cli, file_values, lab.registry)  # bad values fail here, once, not in every run
    stem = resolved.run.name or default_run_name(algo_cls.name, resolved.run.env or resolved.run.data, None)
    experiment = resolved.run.experiment or stem
    base, _ = _pop_option(rest, "--name")
    base, _ = _pop_option(base, "--experiment")
    if lab.plugins_dir:
        base += ["--plugins-dir", str(lab.plugins_dir)]
    slurm = _slurm_options(launch, resolved.run.resolved_runs_dir / f"{stem}.slurm")
    if slurm is not None:  # one array task per seed: `lab train ... --seeds S`, which continues its run when requeued
        if parallel_text is not None:
            raise LabError("--parallel is for running here; with --launcher slurm every seed is a task of its own")
        commands = [["train", algo_cls.name, *rest, "--seeds", str(seed)] for seed in seeds]
        if vectorize:  # one task trains the whole population
            commands = [["train", algo_cls.name, *rest, "--seeds", seeds_text, "--vectorize"]]
        return _submit(slurm, commands, stem, "`lab runs` shows the runs")
    given = {**(file_values or {}), **cli}
    jobs = [continue_or_start(["train", algo_cls.name, *base, "--seed", str(seed), "--name", f"{stem}-s{seed}",
                               "--experiment", experiment], resolved.run.resolved_runs_dir / f"{stem}-s{seed}",
                              f"seed {seed}", {"seed": seed}, {**given, "algo": algo_cls.name, "seed": seed},
                              lab.plugins_dir) for seed in seeds]
    done = [job for job in jobs if not job.args]
    if done:
        print(f"{len(done)} of {len(jobs)} seeds already finished; running the rest", file=sys.stderr)
    due = [(seed, job) for seed, job in zip(seeds, jobs, strict=True) if job.args]
    if vectorize and parallel > 1:  # one population per process, each a share of the seeds
        groups = [due[i::parallel] for i in range(min(parallel, len(due)))]
        threads = [] if "threads" in cli else ["--threads", str(max(1, (os.cpu_count() or 1) // len(groups)))]
        threads += ["--plugins-dir", str(lab.plugins_dir)] if lab.plugins_dir else []
        codes = run_jobs([Job(["train", algo_cls.name, *rest, *threads, "--seeds", ",".join(str(s) for s, _ in group),
                               "--vectorize"], group[0][1].run_dir, f"seeds {','.join(str(s) for s, _ in group)}")
                          for group in groups], parallel)
    elif vectorize:
        from lab.run.population import Member, train_population

        members = [Member(job.run_dir, {**cli, "seed": seed, "name": job.run_dir.name, "experiment": experiment}
                          if job.args[0] == "train" else None) for seed, job in due]
        ended = train_population(lab, algo_cls.name, members, file_values) if members else {}
        codes = {job.label: ended[job.run_dir] for job in jobs if job.run_dir in ended}
    else:
        codes = run_jobs([job for _, job in due], parallel)
    print(results_table(jobs, None))
    return overall_exit_code(codes)


def _train_members(lab: Any, algo_cls: type, members_json: str) -> int:
    """`lab train ALGO --vectorize --members JSON`: the runs whose `lab train` flags JSON lists
    (each a list of strings, with its --name), trained as one population: what a sweep worker
    starts for `lab sweep SPEC --vectorize K`."""
    from lab.experiments.jobs import overall_exit_code
    from lab.run.population import Member, train_population
    from lab.run.settings import resolve

    try:
        flags = json.loads(members_json)
    except ValueError:
        flags = None
    if not (isinstance(flags, list) and all(isinstance(f, list) and all(isinstance(t, str) for t in f) for f in flags)):
        raise LabError("--members takes a JSON list of each member's flags, e.g. "
                       "'[[\"--learning-rate=0.001\", \"--name=a\"], [\"--learning-rate=0.01\", \"--name=b\"]]'")
    settings = [_parse_algorithm_flags(algo_cls, member, lab.registry)[0] for member in flags]
    if not settings or any("name" not in member for member in settings):
        raise LabError("--members needs at least one member, each with its --name")
    runs = [resolve(algo_cls, member, None, lab.registry).run.resolved_runs_dir / member["name"] for member in settings]
    ended = train_population(lab, algo_cls.name, [Member(run, member) for run, member in zip(runs, settings,
                                                                                            strict=True)])
    return overall_exit_code({str(run): code for run, code in ended.items()})


def _positive(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise LabError(f"--{name} expects a positive integer; got '{value}'") from None
    if number <= 0:
        raise LabError(f"--{name} must be a positive integer; got {number}")
    return number


def _fraction(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise LabError(f"--{name} expects a probability between 0 and 1; got '{value}'") from None
    if not 0.0 <= number <= 1.0:
        raise LabError(f"--{name} must be between 0 and 1; got {number}")
    return number


def _tracker_overrides(args: argparse.Namespace, lab: Any) -> dict[str, Any]:
    """`lab resume RUN --wandb offline`: the trackers' settings (and --trackers) may change
    between sessions of a run (where the run learns from may not)."""
    parser = _Parser(prog=f"lab {args.command}", argument_default=argparse.SUPPRESS)
    known = {"trackers"}
    parser.add_argument("--trackers", dest="trackers")
    for cls in lab.registry.tracker_options().values():
        for name, tp, _, _ in config_fields(cls):
            known.add(name)
            parser.add_argument(f"--{flag(name)}", dest=name, **({"nargs": "?", "const": "true"} if tp is bool else {}))
    for token in args.extra:
        if token.startswith("--") and token.split("=", 1)[0][2:].replace("-", "_") not in known:
            raise LabError(f"unknown flag {token.split('=', 1)[0]} for lab {args.command}; it takes "
                           f"{', '.join('--' + flag(n) for n in sorted(known))} besides its own (`lab {args.command} --help`)")
    return vars(parser.parse_args(args.extra))


def cmd_resume(args: argparse.Namespace) -> int:
    from lab.run import entry

    if args.steps is not None and args.epochs is not None:
        raise LabError("give either --steps or --epochs, not both")
    steps = _positive(args.steps, "steps") if args.steps is not None else None
    epochs = _positive(args.epochs, "epochs") if args.epochs is not None else None
    run_dir = Path(args.run_dir)
    lab = _load(args)
    return entry.resume(lab, run_dir, steps, epochs, args.checkpoint, _tracker_overrides(args, lab),
                        _sweep_observers())


def cmd_eval(args: argparse.Namespace) -> int:
    from lab.run import entry

    episodes = _positive(args.episodes, "episodes") if args.episodes is not None else None
    overrides = {}
    if args.eval_sticky_actions is not None:
        overrides["eval_sticky_actions"] = _fraction(args.eval_sticky_actions, "eval-sticky-actions")
    run_dir = Path(args.run_dir)
    lab = _load(args)
    result = entry.evaluate_run(lab, run_dir, episodes, args.video, args.checkpoint,
                                {**_tracker_overrides(args, lab), **overrides})
    print(json.dumps(result, indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a sweep spec's trials here (or hand it to a tracker's server: --wandb-agent); rank them.

    Flags after the spec (`--device cpu --wandb disabled ...`) apply to every trial. Every
    value and env id the spec holds is checked before the first trial starts (each once, so a
    sweep of any size checks in seconds); Ctrl-C stops the check."""
    from lab.distributed import launched
    from lab.experiments.jobs import flag_value, overall_exit_code, parse_parallel, results_table
    from lab.experiments.storage import Storage, default_storage
    from lab.experiments.study import SweepStudy
    from lab.experiments.sweep import grid_size, load_sweep
    from lab.experiments.worker import WorkerPlan, run_worker, trial_jobs

    if launched():
        raise LabError("lab sweep starts its own processes: run it without torchrun")
    sweep = load_sweep(Path(args.spec))
    count = _positive(args.count, "count") if args.count is not None else None
    parallel = parse_parallel(args.parallel)
    lab = _load(args)
    algo_cls = lab.registry.algorithm(sweep.algo)
    common, config_file = _parse_algorithm_flags(algo_cls, args.extra, lab.registry)
    if config_file is not None:
        raise LabError("lab sweep takes no --config; put the settings in the spec's parameters")
    both = sorted(set(common) & set(sweep.parameters))
    if both:
        raise LabError(f"'{both[0]}' is set both in the sweep spec and on the command line; keep one")
    members = _positive(args.vectorize, "vectorize") if args.vectorize is not None else 1
    if args.vectorize is not None:
        _check_vectorized_sweep(sweep, algo_cls)
    _check_sweep(sweep, algo_cls, common, lab)
    chosen = _chosen_sweep_agent(args, common, lab)
    if chosen is not None:
        if args.vectorize is not None:
            raise LabError("--vectorize runs trials here, as populations; a tracker's sweep agent runs them one by one")
        sweep_agent, options = chosen
        return sweep_agent(sweep, count, options)
    runs_dir = Path(args.runs_dir) if args.runs_dir else RunConfig().resolved_runs_dir
    extra = [f"--{flag(k)}={flag_value(v)}" for k, v in common.items()]
    if members > 1 and parallel > 1 and "threads" not in common:  # each population its share of the cores
        extra.append(f"--threads={max(1, (os.cpu_count() or 1) // parallel)}")
    tracker_settings = {"trackers"} | lab.registry.tracker_setting_names()
    resume_extra = [f"--{flag(k)}={flag_value(v)}" for k, v in common.items() if k in tracker_settings]
    max_trials = _positive(args.max_trials, "max-trials") if args.max_trials is not None else sweep.run_cap
    if count is None and max_trials is None and sweep.method != "grid" and not args.status:
        raise LabError(f"a {sweep.method} sweep needs --count K (trials this worker runs) or --max-trials N "
                       "(the study's total, all workers together; the spec's `run_cap:`)")
    storage = Storage.parse(args.storage) if args.storage else default_storage(sweep.name, runs_dir)
    slurm = _slurm_options(vars(args), runs_dir / f"{sweep.name}.slurm")
    study = SweepStudy(sweep, storage, runs_dir)
    if args.status:
        print(results_table(trial_jobs(study), sweep.metric, rank=sweep.goal))
        return 0
    if slurm is not None:
        worker = ["sweep", str(Path(args.spec).resolve()), "--storage", storage.without_password,
                  "--runs-dir", str(runs_dir.resolve()), *(["--count", str(count)] if count else []),
                  *(["--max-trials", str(max_trials)] if max_trials else []), "--parallel", str(parallel),
                  *(["--vectorize", str(members)] if args.vectorize is not None else []), *args.extra]
        return _submit(slurm, [worker] * _positive(args.workers or "1", "workers"), sweep.name,
                       f"`lab sweep {args.spec} --status` lists the trials", storage)
    plan = WorkerPlan(count, max_trials, parallel, [*extra, *(["--runs-dir", args.runs_dir] if args.runs_dir else [])],
                      resume_extra, lab.plugins_dir, members)
    codes, started = run_worker(study, plan)
    if not started and not codes:
        held = len(study.trials())
        print(f"nothing left to run: the study holds {held:,} trials"
              + (f" (the whole grid of {grid_size(sweep):,})" if sweep.method == "grid" else
                 f" (--max-trials {max_trials})" if max_trials is not None else ""), file=sys.stderr)
    print(f"study: {storage.shown} (`lab sweep {args.spec} --status` lists every trial)", file=sys.stderr)
    print(results_table(trial_jobs(study), sweep.metric, rank=sweep.goal, most=100))
    return overall_exit_code(codes)


def _add_slurm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partition", help="--launcher slurm: the partition (default: the cluster's)")
    p.add_argument("--time", help="--launcher slurm: each task's time limit, e.g. 4:00:00 (requeued after it)")
    p.add_argument("--gpus-per-worker", help="--launcher slurm: GPUs per task (default 0)")
    p.add_argument("--cpus-per-worker", help="--launcher slurm: CPUs per task (default 1)")
    p.add_argument("--mem", help="--launcher slurm: memory per task, e.g. 8G (default: the partition's)")
    p.add_argument("--slurm-folder", help="--launcher slurm: submitit's logs (default RUNS/NAME.slurm)")


def _slurm_options(values: dict[str, Any], folder: Path) -> Any:
    """The Slurm options of `--launcher slurm` (None without it); set without it, one line."""
    from lab.experiments.launch import SlurmOptions, check_slurm, time_minutes

    given = [name for name in ("workers", "partition", "time", "gpus_per_worker", "cpus_per_worker", "mem",
                               "slurm_folder") if values.get(name) is not None]
    if values.get("launcher", "local") != "slurm":
        if given:
            raise LabError(f"--{flag(given[0])} goes with --launcher slurm")
        return None
    check_slurm()
    options = SlurmOptions(partition=values.get("partition"), mem=values.get("mem"),
                           folder=Path(values["slurm_folder"]) if values.get("slurm_folder") else folder)
    if values.get("time"):
        time_minutes(values["time"])
        options.time = values["time"]
    if values.get("gpus_per_worker") is not None:
        options.gpus_per_worker = _positive(values["gpus_per_worker"], "gpus-per-worker")
    if values.get("cpus_per_worker") is not None:
        options.cpus_per_worker = _positive(values["cpus_per_worker"], "cpus-per-worker")
    return options


def _submit(options: Any, commands: list[list[str]], name: str, then: str, storage: Any = None) -> int:
    """Submit one Slurm array task per command and say how to follow them."""
    from lab.experiments.launch import submit

    assert options.folder is not None
    job = submit(commands, name, options, options.folder)
    print(f"submitted Slurm job array {job}: {len(commands)} tasks (logs: {options.folder}); "
          f"`squeue -j {job}` shows them, {then}", file=sys.stderr)
    if storage is not None and storage.kind.value == "sqlite":
        print("note: the study is a SQLite file, for workers on one node; workers on several nodes share "
              "--storage postgresql://... or journal:PATH on the shared file system (docs/scale-out.md)", file=sys.stderr)
    return 0


def _chosen_sweep_agent(args: argparse.Namespace, common: dict[str, Any], lab: Any) -> tuple[Callable[..., int], Any] | None:
    """(the tracker's sweep_agent, its settings with the command line's values) when a
    `--NAME-agent` flag hands the sweep to that tracker's server; None: the trials run here."""
    for name, reg in _sweep_agents(lab):
        if getattr(args, f"{name}_agent", False):
            options = reg.options() if reg.options is not None else None
            for key in (f.name for f in dataclasses.fields(options)) if options is not None else ():
                if key in common:
                    setattr(options, key, common[key])
            return reg.extra["sweep_agent"], options
    return None


def _check_vectorized_sweep(sweep: Any, algo_cls: type) -> None:
    """`lab sweep --vectorize`: trials that can train as one population (one line if not)."""
    from lab.rl.population import check_stackable, float_fields

    check_stackable(algo_cls)
    if sweep.method == "bayes":
        raise LabError("--vectorize trains grid and random sweeps' trials K at a time; a bayes sweep draws each trial "
                       "from the results before it (and prunes it alone): drop --vectorize")
    floats = float_fields(algo_cls.Config)
    for name in sweep.searched:
        if name != "seed" and name not in floats:
            raise LabError(f"--vectorize: the spec searches {name}, but the members of one population differ only in "
                           f"their seeds and float settings ({', '.join(sorted(floats))}); search {name} without "
                           "--vectorize")


def _check_sweep(sweep: Any, algo_cls: type, common: dict[str, Any], lab: Any) -> None:
    """Resolve every representative trial (each value of each parameter once) and make each
    env id once, with a progress line on a long check and a clean stop at the first Ctrl-C."""
    import time

    from lab.experiments.sweep import representatives, train_args
    from lab.run.entry import check_settings
    from lab.signals import STOP

    checked, shown, envs = 0, time.monotonic(), set()
    for params in representatives(sweep):
        STOP.raise_if_requested()
        cli, _ = _parse_algorithm_flags(algo_cls, train_args(params)[2:], lab.registry)
        _, resolved = check_settings(lab, algo_cls.name, {**common, **cli}, None)
        env = resolved.run.env
        if env is not None and env not in envs:  # an id a catch-all factory would only refuse when made
            envs.add(env)
            lab.registry.env_factory(env)(env, num_envs=1, seed=0, device="cpu", evaluation=True,
                                          **resolved.env_option_values()).close()
        checked += 1
        if time.monotonic() - shown > 2:
            print(f"checking the sweep's settings: {checked} checked", file=sys.stderr, flush=True)
            shown = time.monotonic()


def cmd_runs(args: argparse.Namespace) -> int:
    from lab.experiments.runs import print_runs

    print_runs(Path(args.runs_dir) if args.runs_dir else RunConfig().resolved_runs_dir)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lab.experiments.compare import PLOT_SUFFIXES, compare

    out = Path(args.out)
    if out.suffix.lower() not in PLOT_SUFFIXES:  # checked first: matplotlib fails only after all the work
        got = f"suffix '{out.suffix}'" if out.suffix else "no suffix"
        raise LabError(f"--out '{out}' has {got}; name the plot file with one of {', '.join(PLOT_SUFFIXES)}")
    table, messages = compare([Path(p) for p in args.run_dirs], args.metric, out, by=args.by, x=args.x,
                              registry=_load(args).registry, band=args.band, estimator=args.estimator,
                              table=args.table, references=[Path(p) for p in args.reference or []])
    print(table)  # stdout holds the table alone: `lab compare ... --table csv > scores.csv`
    for line in messages:
        print(line, file=sys.stderr)
    return 0


def _train_usage(argv: list[str], plugins_dir: str | None) -> int:
    """`lab train` without an algorithm: list the algorithms instead of an argparse error."""
    from lab.run.discovery import load_lab

    lab = load_lab(plugins_dir)
    names = ", ".join(f"{n} ({r.kind})" for n, r in sorted(lab.registry.algorithms.items()))
    print("usage: lab train ALGO [--env ID | --data NAME] [--steps N | --epochs N] [--seed S] ...\n"
          f"algorithms: {names}\n`lab train ALGO --help` lists every flag of ALGO.")
    return 0 if len(argv) > 1 else EXIT_USAGE


BUILTIN_COMMANDS = ("plugins", "train", "resume", "eval", "sweep", "runs", "compare")


def build_parser(lab: Any = None) -> _Parser:
    """The `lab` parser: the built-in commands, and the plugins' commands when `lab` (the
    loaded plugins) is given."""
    parser = _Parser(prog="lab", description="arcade-lab: deep RL and generative models, one runner, many plugins.")
    parser.add_argument("--plugins-dir", metavar="DIR", help="load one-file plugins from DIR (or $LAB_PLUGINS_DIR)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plugins", help="list plugins and what they registered")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("train", help="train an algorithm (`lab train ALGO --help` lists its flags)",
                       add_help=False)
    p.add_argument("algo", help="algorithm name (see `lab plugins`)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--steps", help="new total step budget")
    p.add_argument("--epochs", help="new total epoch budget (dataset algorithms)")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest",
                   help="continue from latest.pt (default) or go back to best.pt (its replay buffer is refilled)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint; writes eval.json")
    p.add_argument("run_dir")
    p.add_argument("--episodes", help="evaluation episodes (agents)")
    p.add_argument("--video", action="store_true", help="also record media (episode videos) under media/")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--eval-sticky-actions", metavar="P",
                   help="Atari: evaluate with this repeat-action probability instead of the run's "
                        "(0: the Atari 100k benchmark's protocol; default: as the run was made)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sweep", help="grid/random/bayes search from a W&B-format sweep spec; any number of workers "
                                      "(re-run to continue)")
    p.add_argument("spec", metavar="SPEC.yaml")
    p.add_argument("--parallel", help="trials this worker runs at once (default 1)")
    p.add_argument("--count", help="trials this worker runs (default: until the grid is done or the study is full)")
    p.add_argument("--max-trials", help="the study's most trials, all workers together (default: the spec's run_cap)")
    p.add_argument("--status", action="store_true", help="list the study's trials with their worker, host and state")
    p.add_argument("--vectorize", nargs="?", const="8", metavar="K",
                   help="train trials K at a time (default 8) in one process, as one population: grid and random "
                        "sweeps whose trials differ only in float settings and seeds (docs/cli.md)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="slurm: submit --workers workers as a Slurm job array (docs/scale-out.md)")
    p.add_argument("--workers", help="--launcher slurm: how many workers (array tasks)")
    _add_slurm_flags(p)
    p.add_argument("--runs-dir", help="runs root (default: $LAB_RUNS_DIR or ./runs)")
    p.add_argument("--storage", metavar="URL",
                   help="the study every worker shares (default: a SQLite file in RUNS/NAME.sweep/); "
                        "postgresql://USER@HOST/DB or mysql://... for workers on several machines, "
                        "journal:PATH for a shared file system (docs/scale-out.md)")
    for name, reg in _sweep_agents(lab):
        p.add_argument(f"--{name}-agent", action="store_true",
                       help=f"hand the sweep to {name}'s sweep server and run an agent here (tracker plugin {reg.plugin})")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("runs", help="table of runs")
    p.add_argument("--runs-dir", help="runs root (default: $LAB_RUNS_DIR or ./runs)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="learning curves and a table across runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--metric", help="metric to compare (default: the runs' key metric)")
    p.add_argument("--out", default="compare.png", help="plot file: .png, .svg or .pdf (default: compare.png)")
    p.add_argument("--by", metavar="FIELD",
                   help="one curve per value of FIELD (algo, env, data or a config key such as learning_rate); "
                        "default: one per experiment (runs that differ only by seed)")
    p.add_argument("--x", choices=("steps", "time"), default="steps",
                   help="x axis: global_step (default) or wall-clock seconds since the run started")
    p.add_argument("--band", choices=("bootstrap", "t"), default="bootstrap",
                   help="the band: 95%% bootstrap interval over runs (default; stays within what the runs scored) "
                        "or the Student-t interval of the mean")
    p.add_argument("--estimator", choices=("mean", "iqm"), default="mean",
                   help="the curve: the mean over runs or the interquartile mean (with --band bootstrap)")
    p.add_argument("--table", choices=("md", "csv", "latex"), default="md", help="the final-score table's format")
    p.add_argument("--reference", action="append", metavar="FILE.csv",
                   help="overlay a published curve: CSV of step,value[,low,high] (repeatable)")
    p.set_defaults(func=cmd_compare)

    for name, reg in (lab.registry.commands.items() if lab is not None else ()):
        if name in BUILTIN_COMMANDS:
            continue
        p = sub.add_parser(name, help=f"{reg.description} (plugin {reg.plugin})")
        if reg.extra.get("arguments") is not None:
            reg.extra["arguments"](p)
        p.set_defaults(func=lambda args, reg=reg, lab=lab: reg.obj(args, lab))
    return parser


def _sweep_agents(lab: Any) -> list[tuple[str, Any]]:
    """The trackers that can run a sweep on their own server (`lab sweep SPEC --NAME-agent`)."""
    trackers = lab.registry.trackers.items() if lab is not None else ()
    return [(name, reg) for name, reg in sorted(trackers) if reg.extra.get("sweep_agent") is not None]


def _pop_plugins_dir(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take `--plugins-dir DIR` / `--plugins-dir=DIR` from anywhere in argv (the last one wins).

    argparse only accepts it before the subcommand; users also put it after (`lab train toy --plugins-dir X`).
    """
    plugins_dir, rest = None, []
    tokens = iter(argv)
    for token in tokens:
        if token == "--plugins-dir":
            plugins_dir = next(tokens, None)
            if plugins_dir is None or plugins_dir.startswith("-"):
                raise LabError("--plugins-dir needs a directory; e.g. --plugins-dir ./my_plugins")
        elif token.startswith("--plugins-dir="):
            plugins_dir = token.partition("=")[2]
            if not plugins_dir:
                raise LabError("--plugins-dir= needs a directory; e.g. --plugins-dir=./my_plugins")
        else:
            rest.append(token)
    return plugins_dir, rest


def main(argv: list[str] | None = None) -> int:
    """The `lab` command; called with `argv` (tests, scripts) it leaves signal handling as it found it."""
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    trains = any(token in ("train", "resume", "sweep") for token in argv[:3])
    if trains:  # before the heavy imports: Ctrl-C during set-up must not land inside them
        STOP.install()
        if as_program:
            stop_when_orphaned()
    code = 1  # replaced by the command's own exit code unless it raised
    try:
        code = _dispatch(argv)
        return code
    finally:
        if trains and as_program:
            STOP.exit_on_signal(code)
        elif trains:
            STOP.uninstall()


def _algo_as_flag(argv: list[str]) -> list[str]:
    """`lab train --algo=dqn ...` (how a W&B sweep agent passes it) -> `lab train dqn ...`."""
    if argv[:1] != ["train"] or (len(argv) > 1 and not argv[1].startswith("--")):
        return argv
    rest, algo = _pop_option(argv[1:], "--algo")
    return ["train", algo, *rest] if algo else argv


def _dispatch(argv: list[str]) -> int:
    try:
        plugins_dir, argv = _pop_plugins_dir(argv)
        argv = _algo_as_flag(argv)
        if argv[:1] == ["train"] and (len(argv) == 1 or argv[1] in ("-h", "--help")):
            return _train_usage(argv, plugins_dir)
        lab = None
        command = next((token for token in argv if not token.startswith("-")), None)
        if command not in BUILTIN_COMMANDS or command == "sweep":  # plugins add commands and sweep agents
            from lab.run.discovery import load_lab

            lab = load_lab(plugins_dir)
        parser = build_parser(lab)
        args, extra = parser.parse_known_args(([] if plugins_dir is None else ["--plugins-dir", plugins_dir]) + argv)
        args.extra, args.loaded = extra, lab
        if args.extra and args.command not in ("resume", "eval", "sweep"):
            parser.error(f"unrecognized arguments: {' '.join(args.extra)}")
        return int(args.func(args) or 0)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SetupInterrupted:  # a Ctrl-C while a sweep checks its trials: nothing was started
        print("interrupted before any run started", file=sys.stderr)
        return STOP.exit_code()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lab compare ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
