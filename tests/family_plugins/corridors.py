"""A third party's env family, tracker and command, added without touching lab/ (tests).

`Corridor/Short-v0`, `Corridor/Long-v0`: the toy corridor of `tests/local_plugins/toy.py`,
whose length is the family's setting `--corridor-length`; their scores normalise by
(random, human) = (0, 2). The `notes` tracker writes what it is told into the run folder
under its own setting `--notes-prefix`, and `lab sweep SPEC --notes-agent` hands a sweep to
its "server" (a file); `lab hello NAME` is a command.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "local_plugins"))

from toy import ToyCorridor

from lab.api import EnvFamily, LabError, Tracker, check_ranges, hookimpl, option

MADE = Path("corridors-made.jsonl")  # what each factory call was given, in the test's own folder


@dataclass
class CorridorOptions:
    corridor_length: int = option(5, "cells to walk")

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("corridor_length",))


CORRIDORS = EnvFamily("corridor", options=CorridorOptions,
                      reference_scores=lambda env_id: (0.0, 2.0) if env_id.startswith("Corridor/") else None)


def make_corridor(env_id, *, num_envs=1, seed=0, device="cpu", evaluation=False, render=False, **options):
    if env_id not in ("Corridor/Short-v0", "Corridor/Long-v0"):
        raise LabError(f"no corridor '{env_id}'; use Corridor/Short-v0 or Corridor/Long-v0")
    opts = CorridorOptions(**options)
    with MADE.open("a") as f:
        f.write(json.dumps({"env_id": env_id, "evaluation": evaluation, **options}) + "\n")
    env = ToyCorridor(num_envs, seed, device)
    env.LENGTH = opts.corridor_length
    return env


@dataclass
class NotesOptions:
    notes_prefix: str = option("note", "what every line of notes.jsonl starts with")


class Notes(Tracker):
    def __init__(self, path: Path, prefix: str) -> None:
        self.path, self.prefix = path, prefix

    def log(self, metrics, step):
        with self.path.open("a") as f:
            f.write(json.dumps({"prefix": self.prefix, "step": step, **metrics}) + "\n")


@hookimpl
def register_envs(register):
    for env_id in ("Corridor/Short-v0", "Corridor/Long-v0"):
        register(env_id, make_corridor, description="toy corridors", family=CORRIDORS)


def notes_sweep_agent(sweep, count, options: NotesOptions) -> int:
    Path("notes-sweep.json").write_text(json.dumps({"name": sweep.name, "count": count, "prefix": options.notes_prefix}))
    return 0


@hookimpl
def register_trackers(register):
    register("notes", lambda run: Notes(run.run_dir / "notes.jsonl", run.tracker_options["notes"].notes_prefix),
             description="notes.jsonl", options=NotesOptions, sweep_agent=notes_sweep_agent)


def hello(args, lab) -> int:
    print(f"hello {args.who}, {len(lab.registry.algorithms)} algorithms are here")
    return 0


@hookimpl
def register_commands(register):
    register("hello", hello, description="say hello", arguments=lambda parser: parser.add_argument("who"))
