"""What the loaded plugins registered: algorithms, envs, datasets, trackers, commands."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lab.api import Algorithm, EnvFamily, Kind
from lab.api.errors import unknown
from lab.run.run_config import check_config_class

T = TypeVar("T")


@dataclass(frozen=True)
class Registration(Generic[T]):
    """One registered name; `obj` is what lookups hand out (an algorithm class, a factory, ...)."""

    name: str
    kind: str  # agent | generator | supervised | env | dataset | tracker | command
    plugin: str
    obj: T = field(compare=False)
    description: str = ""
    family: EnvFamily | None = field(default=None, compare=False)  # envs: what the family shares
    options: type | None = field(default=None, compare=False)  # trackers: a dataclass of run settings
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # commands: arguments; trackers: sweep agent


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


class Registry:
    """Name -> registration tables, filled through the register_* hooks."""

    def __init__(self) -> None:
        self.algorithms: dict[str, Registration[type[Algorithm]]] = {}
        self.envs: dict[str, Registration[Callable[..., Any]]] = {}
        self.datasets: dict[str, Registration[Callable[..., Any]]] = {}
        self.trackers: dict[str, Registration[Callable[..., Any]]] = {}
        self.commands: dict[str, Registration[Callable[..., int]]] = {}

    # -- filling (called by lab.run.discovery with the registering plugin's name) --

    def add_algorithm(self, plugin: str, cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"register_algorithms expects an Algorithm subclass, got {cls!r}")
        for attr in ("name", "kind", "Config"):
            if not hasattr(cls, attr):
                raise TypeError(f"algorithm {cls.__name__} must set the class attribute '{attr}'")
        try:
            cls.kind = Kind(cls.kind)  # the word ("agent") a plugin may have written, as the type
        except ValueError:
            raise TypeError(f"algorithm {cls.name}: kind must be one of {', '.join(k.value for k in Kind)}, "
                            f"got {cls.kind!r}") from None
        check_config_class(cls.Config, cls.__name__)
        self._add(self.algorithms, Registration(cls.name, cls.kind.value, plugin, cls, (cls.__doc__ or "").strip()))

    def add_env(self, plugin: str, env_id: str, factory: Callable[..., Any], description: str = "",
                family: EnvFamily | None = None) -> None:
        if family is not None and not isinstance(family, EnvFamily):
            raise TypeError(f"register_envs: family must be a lab.api.EnvFamily, got {family!r}")
        if family is not None and family.options is not None:
            check_config_class(family.options, f"env family {family.name!r} options")
        self._add(self.envs, Registration(env_id, "env", plugin, factory, description, family=family))

    def add_dataset(self, plugin: str, name: str, factory: Callable[..., Any], description: str = "") -> None:
        self._add(self.datasets, Registration(name, "dataset", plugin, factory, description))

    def add_tracker(self, plugin: str, name: str, factory: Callable[..., Any], description: str = "",
                    options: type | None = None, sweep_agent: Callable[..., int] | None = None) -> None:
        if options is not None:
            check_config_class(options, f"tracker {name!r} options")
        self._add(self.trackers, Registration(name, "tracker", plugin, factory, description, options=options,
                                              extra={"sweep_agent": sweep_agent} if sweep_agent else {}))

    def add_command(self, plugin: str, name: str, function: Callable[..., int], description: str = "",
                    arguments: Callable[[Any], None] | None = None) -> None:
        self._add(self.commands, Registration(name, "command", plugin, function, description,
                                              extra={"arguments": arguments}))

    @staticmethod
    def _add(table: dict[str, Registration[T]], reg: Registration[T]) -> None:
        if reg.name in table and table[reg.name].plugin != reg.plugin:
            raise TypeError(f"{reg.kind} '{reg.name}' is already registered by plugin '{table[reg.name].plugin}'")
        table[reg.name] = reg

    # -- lookups with helpful errors --

    def algorithm(self, name: str) -> type[Algorithm]:
        if name not in self.algorithms:
            raise unknown("algorithm", name, self.algorithms, "run `lab plugins` to list algorithms")
        return self.algorithms[name].obj

    def env(self, env_id: str) -> Registration[Callable[..., Any]]:
        """The registration for `env_id`: an exact one, else the most specific matching glob
        (the one with the most literal characters), so `ALE/*-v5` beats a catch-all `*`."""
        if env_id in self.envs:
            return self.envs[env_id]
        patterns = [p for p in self.envs if _is_glob(p)]
        for pattern in sorted(patterns, key=lambda p: -sum(ch not in "*?[]" for ch in p)):
            if fnmatch.fnmatchcase(env_id, pattern):
                return self.envs[pattern]
        raise unknown("env", env_id, self.known_env_ids(), "run `lab plugins` to list environments")

    def env_factory(self, env_id: str) -> Callable[..., Any]:
        return self.env(env_id).obj

    def env_family(self, env_id: str) -> EnvFamily | None:
        return self.env(env_id).family

    def families(self) -> list[EnvFamily]:
        """Every registered env family, once each, in registration order."""
        found: dict[str, EnvFamily] = {}
        for reg in self.envs.values():
            if reg.family is not None:
                found.setdefault(reg.family.name, reg.family)
        return list(found.values())

    def normalized_score(self, env_id: str | None, score: float) -> float | None:
        """(score - random) / (human - random) where the env's family publishes reference
        scores for `env_id`, else None (and None for an id no factory makes)."""
        if env_id is None:
            return None
        try:
            family = self.env_family(env_id)
        except Exception:
            return None
        return None if family is None else family.normalized_score(env_id, score)

    def known_env_ids(self) -> list[str]:
        """Exact ids plus the gymnasium ids that registered glob patterns cover."""
        import gymnasium as gym

        exact = [p for p in self.envs if not _is_glob(p)]
        patterns = [p for p in self.envs if p not in exact]
        covered = [i for i in gym.registry if any(fnmatch.fnmatchcase(i, p) for p in patterns)]
        return exact + covered

    def dataset_factory(self, name: str) -> Callable[..., Any]:
        if name not in self.datasets:
            raise unknown("dataset", name, self.datasets, "run `lab plugins` to list datasets")
        return self.datasets[name].obj

    def tracker_options(self) -> dict[str, type]:
        """{tracker name: its options dataclass} for the trackers that register settings."""
        return {name: reg.options for name, reg in self.trackers.items() if reg.options is not None}

    def tracker_setting_names(self) -> set[str]:
        """Every run setting a tracker adds: where results go, never what a run learns."""
        return {f.name for cls in self.tracker_options().values() for f in dataclasses.fields(cls)}

    def by_plugin(self) -> dict[str, list[Registration[Any]]]:
        out: dict[str, list[Registration[Any]]] = {}
        for table in (self.algorithms, self.envs, self.datasets, self.trackers, self.commands):
            for reg in table.values():
                out.setdefault(reg.plugin, []).append(reg)
        return out
