"""Run settings: one namespace of flags, YAML keys and preset entries, resolved and checked.

The settings of a run are the runner's own (`RunConfig`), the algorithm's `Config`, the
options of the env family its `--env` belongs to (`EnvFamily.options`: Atari's
`frame_stack`, ...) and every tracker's options (W&B's `wandb`, `project`). Precedence,
lowest first: dataclass defaults < the algorithm's preset for the env/dataset < `--config
FILE.yaml` < command-line flags. Values are converted and validated here so a bad value is
one clear error, never a traceback deep inside training.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lab.api import LabError, flag
from lab.api.errors import close_matches, shorten
from lab.run.run_config import RUN_FIELDS, RunConfig, split_optional
from lab.run.yamlfile import read_yaml

if TYPE_CHECKING:
    from lab.api import Algorithm, EnvFamily
    from lab.run.registry import Registry

_NONE_WORDS = {"none", "null", "~"}
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class OwnerKind(Enum):
    """What, beside the algorithm, adds settings; the value is how an error names one."""

    TRACKER = "tracker '{}'"
    ENV_FAMILY = "{} envs"


@dataclass(frozen=True)
class Owner:
    """The tracker or env family a setting belongs to: an env family's settings are refused
    for another family's envs, a tracker's apply to every run."""

    kind: OwnerKind
    name: str

    def __str__(self) -> str:
        return self.kind.value.format(self.name)


def convert(value: Any, tp: Any, name: str) -> Any:
    """Convert a CLI string or YAML value to the field's type, or raise LabError."""
    base, optional = split_optional(tp)
    where = f"--{flag(name)}"
    if optional and typing.get_origin(base) in (tuple, list) and isinstance(value, str) \
            and value.strip().lower() in _NONE_WORDS:  # `--trackers none`: an empty list, not the default
        return ()
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise LabError(f"{where} needs a value")
    origin = typing.get_origin(base)
    if origin is Literal:
        return _convert_choice(value, typing.get_args(base), where)
    if base is bool:
        return _convert_bool(value, where)
    if base in (int, float):
        return _convert_number(value, base is int, where)
    if base is str:
        return str(value)
    if origin in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        converted = [convert(item, args[0] if len(args) == 1 else args[i], name) for i, item in enumerate(items)]
        return tuple(converted) if origin is tuple else converted
    raise LabError(f"{where}: unsupported type {tp!r}")


def _convert_choice(value: Any, choices: tuple[Any, ...], where: str) -> Any:
    """A Literal field's value: one of `choices`."""
    if isinstance(value, bool):  # YAML reads `compile: true` as a bool
        value = "true" if value else "false"
    if value in choices:
        return value
    raise LabError(f"{where} must be one of {', '.join(map(str, choices))}; got '{shorten(value)}'")


def _convert_bool(value: Any, where: str) -> bool:
    """A bool field's value: a bool, or true/yes/1/on, false/no/0/off in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LabError(f"{where} must be true or false; got '{shorten(value)}'")


def _convert_number(value: Any, integer: bool, where: str) -> int | float:
    """An int field's value (`1e6`, `1_000` and 3.0 are integers, 2.5 is not) or a float field's."""
    if isinstance(value, bool):
        raise LabError(f"{where} expects {'an integer' if integer else 'a number'}; got '{shorten(value)}'")
    try:
        if integer:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            text = str(value).strip().replace("_", "")
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float) if ("e" in text.lower() or "." in text) else int(text)
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past a float's range
        raise LabError(f"{where} expects {'an integer' if integer else 'a number'}; got '{shorten(value)}'") from None
    if not math.isfinite(number):  # no setting means anything by inf or nan: `none` turns an optional one off
        raise LabError(f"{where} must be a finite number; got '{shorten(value)}'")
    return number


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read a --config file: flat `field: value` pairs, or the `run:`/`config:` shape of config.yaml."""
    path = Path(path)
    if path.is_dir():
        inside = path / "config.yaml"
        hint = f"to repeat that run's settings pass --config {inside}" if inside.is_file() else "pass a YAML file to --config"
        raise LabError(f"config file '{path}' is a folder; {hint}")
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise LabError(f"config file '{path}' {problem}; pass an existing YAML file to --config")
    data = read_yaml(path, f"config file '{path}'")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LabError(f"config file '{path}' must hold a mapping of field: value pairs")
    if "run" in data or "config" in data:  # a run's config.yaml: reproduce its settings
        flat: dict[str, Any] = {}
        for section in ("run", "config"):
            part = data.get(section) or {}
            if not isinstance(part, dict):
                raise LabError(f"config file '{path}': '{section}' must be a mapping")
            flat.update(part)
        flat.pop("name", None)  # a reproduction is a new run, not the same directory
        return {str(k).replace("-", "_"): v for k, v in flat.items()}
    return {str(k).replace("-", "_"): v for k, v in data.items()}


@dataclass
class Resolved:
    """A run's settings, resolved: what config.yaml records and the runner builds from."""

    run: RunConfig
    algo: Any  # the algorithm's Config instance
    preset: str | None  # which preset applied, if any
    preset_steps: int | None = None  # the preset's budget, used when neither --steps nor --epochs is given
    env_options: Any = None  # the env family's options instance (None: the env takes none)
    tracker_options: dict[str, Any] = field(default_factory=dict)  # tracker name -> its options instance

    def run_section(self) -> dict[str, Any]:
        """config.yaml's `run:`: the runner's settings, the env family's and the trackers'."""
        section = as_plain(self.run)
        for options in (self.env_options, *self.tracker_options.values()):
            if options is not None:
                section.update(as_plain(options))
        return section

    def env_option_values(self) -> dict[str, Any]:
        """What `ctx.make_env` passes to the env factory."""
        return {} if self.env_options is None else dataclasses.asdict(self.env_options)


PRESET_BUDGET = "steps"  # a preset's default budget (RL Zoo's n_timesteps) goes under this key


def find_preset(presets: dict[str, dict[str, Any]], target: str,
                family: str | None = None) -> tuple[str | None, dict[str, Any]]:
    """The preset for an env id or dataset: an exact key first, then the first glob key
    (`*-v5`) that matches, in the order the algorithm lists them, then the key naming the
    env's family (`atari`)."""
    if target in presets:
        return target, dict(presets[target])
    for key, values in presets.items():
        if any(ch in key for ch in "*?[") and fnmatch.fnmatchcase(target, key):
            return key, dict(values)
    if family is not None and family in presets:
        return family, dict(presets[family])
    return None, {}


def named_preset(algo_cls: type[Algorithm], name: str) -> tuple[str, dict[str, Any]]:
    """`--preset NAME`: the algorithm's preset under that key, or a LabError naming its presets."""
    if name not in algo_cls.presets:
        choices = ", ".join(algo_cls.presets) or "none"
        raise LabError(f"{algo_cls.name} has no preset '{shorten(name)}'{close_matches(name, algo_cls.presets)}; "
                       f"--preset takes one of: {choices}")
    return name, dict(algo_cls.presets[name])


def _expand_aliases(config_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Old names a Config still accepts (`aliases = {"anneal": ("anneal_lr", ...)}`), each
    setting the fields it stands for unless they are given themselves."""
    aliases: dict[str, tuple[str, ...]] = getattr(config_cls, "aliases", {})
    out = {k: v for k, v in values.items() if k not in aliases}
    for old, new in aliases.items():
        if old in values:
            for name in new:
                out.setdefault(name, values[old])
    return out


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _build(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {k: convert(v, hints[k], k) for k, v in values.items() if k in hints}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise LabError(f"invalid setting: {exc}") from None


def resolve(algo_cls: type[Algorithm], cli: dict[str, Any], file_values: dict[str, Any] | None,
            registry: Registry, from_run_folder: bool = False) -> Resolved:
    """Merge defaults < preset < file < CLI and build validated settings: the runner's, the
    algorithm's, the env family's and every tracker's.

    A setting of another env family than the run's is refused, unless the values come
    from a run folder (`from_run_folder`): runs before env families wrote them for any env."""
    file_values = _expand_aliases(algo_cls.Config, file_values or {})
    cli = _expand_aliases(algo_cls.Config, cli)
    algo_names = _fields(algo_cls.Config)
    trackers = registry.tracker_options()
    family_options = {f.name: f.options for f in registry.families() if f.options is not None}
    owners: dict[str, Owner] = {}  # setting -> who adds it, to refuse clashes with the algorithm's
    for name, cls in trackers.items():
        owners.update(dict.fromkeys(_fields(cls), Owner(OwnerKind.TRACKER, name)))
    for name, options in family_options.items():
        owners.update(dict.fromkeys(_fields(options), Owner(OwnerKind.ENV_FAMILY, name)))
    clash = sorted(algo_names & set(owners))
    if clash:
        raise LabError(f"{algo_cls.name}'s setting '{clash[0]}' is also a setting of {owners[clash[0]]}; "
                       "rename one of them")
    known = algo_names | RUN_FIELDS | set(owners)
    for key in list(file_values) + list(cli):
        if key not in known:
            raise LabError(
                f"unknown setting '{shorten(key)}' for {algo_cls.name}{close_matches(key, known)}; "
                f"run `lab train {algo_cls.name} --help` to list settings"
            )
    merged = {**file_values, **cli}
    env = merged.get("env")
    family: EnvFamily | None = registry.env_family(str(env)) if env else None
    target = env or merged.get("data")
    preset_name: str | None
    if merged.get("preset") is not None:
        preset_name, preset = named_preset(algo_cls, str(merged["preset"]))
    else:
        preset_name, preset = (None, {}) if target is None else find_preset(
            algo_cls.presets, str(target).partition(":")[0], family.name if family else None)
    preset_steps = preset.pop(PRESET_BUDGET, None)
    values = {**preset, **merged}
    options_cls = family.options if family is not None else None
    mine = _fields(options_cls) if options_cls is not None else set()
    for key in [] if from_run_folder else merged:
        if key in owners and owners[key].kind is OwnerKind.ENV_FAMILY and key not in mine:
            where = f"--env {shorten(env)}" if env else f"--data {shorten(merged.get('data'))}"
            raise LabError(f"--{flag(key)} is a setting of {owners[key]}; {where} takes no such setting")
    return Resolved(
        run=_build(RunConfig, {k: v for k, v in values.items() if k in RUN_FIELDS}),
        algo=_build(algo_cls.Config, {k: v for k, v in values.items() if k in algo_names}),
        preset=preset_name,
        preset_steps=None if preset_steps is None else int(preset_steps),
        env_options=_build(options_cls, {k: v for k, v in values.items() if k in mine})
        if options_cls is not None and mine else None,
        tracker_options={name: _build(cls, {k: v for k, v in values.items() if k in _fields(cls)})
                         for name, cls in trackers.items()},
    )


def config_fields(config_cls: type) -> list[tuple[str, Any, Any, str]]:
    """(name, type, default, help) for each field: what the CLI turns into flags."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append((f.name, hints[f.name], default, f.metadata.get("help", "")))
    return out


def as_plain(config: Any) -> dict[str, Any]:
    """A dataclass as YAML/JSON-friendly values (tuples become lists)."""
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}
