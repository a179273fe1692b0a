"""`lab sweep SPEC.yaml`: grid, random and Bayesian search over any config field, in W&B's sweep format.

One file serves a laptop and a cluster: locally every trial is a normal `lab train` run
named SWEEP-001, SWEEP-002, ... in the W&B group SWEEP; `--wandb-agent` hands the same
file to W&B's sweep server and agents instead. The spec, as W&B writes it:

    name: cartpole-lr                 # optional; default: the file's name
    method: grid                      # grid | random | bayes (Optuna's TPE)
    metric: {name: eval/return_mean, goal: maximize}
    run_cap: 20                       # optional: the study's most trials (all workers together)
    parameters:
      algo: {value: dqn}              # fixed settings are single values
      env: {value: CartPole-v1}
      steps: {value: 20000}
      learning_rate: {values: [0.0001, 0.0003, 0.001]}
      gamma: {min: 0.95, max: 0.999}  # random search: uniform between (ints: int_uniform)

This module reads and checks the spec and says what a trial's parameters are; the trials
themselves live in a study that any number of workers share (`lab.experiments.study`), so
running the command again (or on another machine) continues the same sweep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.api import LabError, flag
from lab.api.errors import shorten
from lab.experiments.jobs import flag_value
from lab.run.yamlfile import read_yaml

METHODS = ("grid", "random", "bayes")
# Settings every trial takes from the sweep, never from its parameters.
SWEEPS_OWN = {"experiment": "every trial's W&B group is the sweep's name",
              "name": "trials are named after the sweep: NAME-001, NAME-002, ...",
              "runs_dir": "pass --runs-dir after the spec, for every worker alike"}
DISTRIBUTIONS = ("constant", "categorical", "uniform", "int_uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "normal", "q_normal")


@dataclass
class Sweep:
    name: str
    method: str
    metric: str | None
    goal: str
    parameters: dict[str, dict[str, Any]]
    spec: dict[str, Any]
    run_cap: int | None = None  # W&B's key: the study's most trials, all workers together

    @property
    def algo(self) -> str:
        return str(self.parameters["algo"]["value"])

    @property
    def searched(self) -> list[str]:
        return [k for k, p in self.parameters.items() if "value" not in p]


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep spec; every mistake is one LabError naming the fix."""
    if path.is_dir():
        raise LabError(f"sweep spec '{path}' is a folder; pass a YAML file in W&B's sweep format (see docs/cli.md: Sweeps)")
    if not path.is_file():
        raise LabError(f"sweep spec '{path}' not found; pass a YAML file in W&B's sweep format (see docs/cli.md: Sweeps)")
    spec = read_yaml(path, f"sweep spec '{path}'")
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        raise LabError(f"sweep spec '{path}' needs a `parameters:` mapping (W&B's sweep format)")
    method = spec.get("method", "grid")
    if method not in METHODS:
        raise LabError(f"unknown sweep method '{shorten(method)}'; use one of {', '.join(METHODS)}")
    metric = spec.get("metric") or {}
    if not isinstance(metric, dict):
        raise LabError("`metric:` must be a mapping like {name: eval/return_mean, goal: maximize}")
    goal = metric.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise LabError(f"metric goal must be maximize or minimize, got '{shorten(goal)}'")
    parameters: dict[str, dict[str, Any]] = {}
    for name, param in spec["parameters"].items():
        if not isinstance(param, dict):
            raise LabError(f"parameter '{shorten(name)}' must be a mapping "
                           "({value: X}, {values: [...]} or {min: A, max: B})")
        _check_parameter(shorten(name), param, method)
        key = str(name).replace("-", "_")
        if key in SWEEPS_OWN:
            raise LabError(f"parameter '{shorten(name)}' is the sweep's own ({SWEEPS_OWN[key]}); remove it from the spec")
        parameters[key] = param
    if "value" not in parameters.get("algo", {}):
        raise LabError("the sweep needs the algorithm as a fixed parameter: `algo: {value: dqn}`")
    name = str(spec.get("name") or path.stem)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise LabError(f"sweep name '{shorten(name)}' must be letters, digits, '-', '_' or '.' (it names the runs)")
    run_cap = spec.get("run_cap")
    if run_cap is not None and (isinstance(run_cap, bool) or not isinstance(run_cap, int) or run_cap < 1):
        raise LabError(f"`run_cap:` must be a positive number of trials; got {shorten(run_cap)}")
    return Sweep(name, method, metric.get("name"), goal, parameters, spec, run_cap)


def _check_parameter(name: str, param: dict[str, Any], method: str) -> None:
    """One LabError for a parameter W&B would refuse; `name` is the parameter as messages show it."""
    kind = distribution(param)
    if kind not in DISTRIBUTIONS:
        raise LabError(f"parameter '{name}': unknown distribution '{shorten(kind)}'; use one of {', '.join(DISTRIBUTIONS)}")
    if kind == "categorical" and not (isinstance(param.get("values"), list) and param["values"]):
        raise LabError(f"parameter '{name}': `values:` must be a non-empty list")
    for key in ("min", "max", "mu", "sigma", "q"):
        value = param.get(key)
        if key in param and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise LabError(f"parameter '{name}': `{key}:` must be a finite number; got {shorten(value)}")
    if kind in ("uniform", "int_uniform", "q_uniform", "log_uniform", "log_uniform_values"):
        if "min" not in param or "max" not in param or not param["min"] < param["max"]:
            raise LabError(f"parameter '{name}': {kind} needs min < max")
        if kind == "log_uniform_values" and param["min"] <= 0:
            raise LabError(f"parameter '{name}': log_uniform_values needs min > 0")
    if kind in ("normal", "q_normal") and param.get("sigma", 1) <= 0:
        raise LabError(f"parameter '{name}': sigma must be positive")
    if method == "bayes" and kind in ("normal", "q_normal"):
        raise LabError(f"parameter '{name}' is a {kind} distribution; bayes search takes values and min/max ranges "
                       "(uniform, int_uniform, q_uniform, log_uniform, log_uniform_values)")
    if method == "grid" and kind not in ("constant", "categorical"):
        raise LabError(f"parameter '{name}' is a {kind} range; grid search needs `values: [...]` (or method: random)")


def distribution(param: dict[str, Any]) -> str:
    """W&B's inference: value -> constant, values -> categorical, int min/max -> int_uniform, else uniform."""
    if "distribution" in param:
        return str(param["distribution"])
    if "value" in param:
        return "constant"
    if "values" in param:
        return "categorical"
    if isinstance(param.get("min"), int) and isinstance(param.get("max"), int):
        return "int_uniform"
    return "uniform"


def draw(param: dict[str, Any], rng: random.Random) -> Any:
    kind = distribution(param)
    lo, hi = param.get("min"), param.get("max")
    if kind == "constant":
        return param["value"]
    if kind == "categorical":
        return rng.choice(param["values"])
    if kind == "uniform":
        return rng.uniform(lo, hi)
    if kind == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if kind == "q_uniform":
        q = param.get("q", 1)
        return round(rng.uniform(lo, hi) / q) * q
    if kind == "log_uniform":  # W&B: min and max are natural-log exponents
        return math.exp(rng.uniform(lo, hi))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    value = rng.gauss(param.get("mu", 0.0), param.get("sigma", 1.0))
    return round(value / param.get("q", 1)) * param.get("q", 1) if kind == "q_normal" else value


def grid_choices(param: dict[str, Any]) -> list[Any]:
    return param["values"] if "values" in param else [param["value"]]


def grid_size(sweep: Sweep) -> int:
    return math.prod(len(grid_choices(p)) for p in sweep.parameters.values())


def representatives(sweep: Sweep) -> Iterator[dict[str, Any]]:
    """Trials that together hold every value (grid) or both ends of every range (random) of
    every parameter, each once, beside the first trial's other values: what checking the
    settings of a sweep of any size before it starts needs (each value's own range and type,
    each env id). Settings that only fail in combination fail in their own trial."""
    first = {name: grid_choices(p)[0] if "value" in p or "values" in p else p.get("min", p.get("mu", 0.0))
             for name, p in sweep.parameters.items()}
    yield first
    for name, param in sweep.parameters.items():
        if "values" in param:
            values = param["values"][1:]
        elif "value" in param:
            values = []
        else:
            values = [v for v in (param.get("max"),) if v is not None]
            if distribution(param) == "log_uniform":  # min and max are natural-log exponents
                values = [math.exp(param["min"]), math.exp(param["max"])]
        for value in values:
            yield {**first, name: value}


def train_args(params: dict[str, Any]) -> list[str]:
    """`lab train` arguments for one trial: ALGO, then --flag=value for every other parameter
    (with '=', so a negative number is never taken for a flag)."""
    return ["train", str(params["algo"]), *(f"--{flag(k)}={flag_value(v)}" for k, v in params.items() if k != "algo")]


def trial_name(sweep: Sweep, index: int) -> str:
    return f"{sweep.name}-{index:03d}"
