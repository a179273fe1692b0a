"""What the loaded plugins registered: algorithms, envs, datasets, trackers."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from lab.algorithm import KINDS, Algorithm
from lab.errors import unknown


@dataclass(frozen=True)
class Registration:
    name: str
    kind: str  # agent | generator | supervised | env | dataset | tracker
    plugin: str
    obj: Any = field(compare=False)
    description: str = ""


class Registry:
    """Name -> registration tables, filled through the register_* hooks."""

    def __init__(self) -> None:
        self.algorithms: dict[str, Registration] = {}
        self.envs: dict[str, Registration] = {}
        self.datasets: dict[str, Registration] = {}
        self.trackers: dict[str, Registration] = {}

    # -- filling (called by lab.run.discovery with the registering plugin's name) --

    def add_algorithm(self, plugin: str, cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"register_algorithms expects an Algorithm subclass, got {cls!r}")
        for attr in ("name", "kind", "Config"):
            if not hasattr(cls, attr):
                raise TypeError(f"algorithm {cls.__name__} must set the class attribute '{attr}'")
        if cls.kind not in KINDS:
            raise TypeError(f"algorithm {cls.name}: kind must be one of {KINDS}, got {cls.kind!r}")
        from lab.config import check_config_class

        check_config_class(cls)
        self._add(self.algorithms, Registration(cls.name, cls.kind, plugin, cls, (cls.__doc__ or "").strip()))

    def add_env(self, plugin: str, env_id: str, factory: Callable[..., Any], description: str = "") -> None:
        self._add(self.envs, Registration(env_id, "env", plugin, factory, description))

    def add_dataset(self, plugin: str, name: str, factory: Callable[..., Any], description: str = "") -> None:
        self._add(self.datasets, Registration(name, "dataset", plugin, factory, description))

    def add_tracker(self, plugin: str, name: str, factory: Callable[..., Any], description: str = "") -> None:
        self._add(self.trackers, Registration(name, "tracker", plugin, factory, description))

    @staticmethod
    def _add(table: dict[str, Registration], reg: Registration) -> None:
        if reg.name in table and table[reg.name].plugin != reg.plugin:
            raise TypeError(f"{reg.kind} '{reg.name}' is already registered by plugin '{table[reg.name].plugin}'")
        table[reg.name] = reg

    # -- lookups with helpful errors --

    def algorithm(self, name: str) -> type[Algorithm]:
        if name not in self.algorithms:
            raise unknown("algorithm", name, self.algorithms, "run `lab plugins` to list algorithms")
        return self.algorithms[name].obj

    def env_factory(self, env_id: str) -> Callable[..., Any]:
        """The factory for `env_id`: an exact registration, else the most specific matching
        glob (the one with the most literal characters), so `ALE/*-v5` beats a catch-all `*`."""
        if env_id in self.envs:
            return self.envs[env_id].obj
        patterns = [p for p in self.envs if any(ch in p for ch in "*?[")]
        for pattern in sorted(patterns, key=lambda p: -sum(ch not in "*?[]" for ch in p)):
            if fnmatch.fnmatchcase(env_id, pattern):
                return self.envs[pattern].obj
        raise unknown("env", env_id, self.known_env_ids(), "run `lab plugins` to list environments")

    def known_env_ids(self) -> list[str]:
        """Exact ids plus the gymnasium ids that registered glob patterns cover."""
        import gymnasium as gym

        exact = [p for p in self.envs if not any(ch in p for ch in "*?[")]
        patterns = [p for p in self.envs if p not in exact]
        covered = [i for i in gym.registry if any(fnmatch.fnmatchcase(i, p) for p in patterns)]
        return exact + covered

    def dataset_factory(self, name: str) -> Callable[..., Any]:
        if name not in self.datasets:
            raise unknown("dataset", name, self.datasets, "run `lab plugins` to list datasets")
        return self.datasets[name].obj

    def by_plugin(self) -> dict[str, list[Registration]]:
        out: dict[str, list[Registration]] = {}
        for table in (self.algorithms, self.envs, self.datasets, self.trackers):
            for reg in table.values():
                out.setdefault(reg.plugin, []).append(reg)
        return out

