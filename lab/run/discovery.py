"""Find and load plugins: built-ins, installed packages (entry points), local files.

- Built-ins: every module in `lab.plugins` (the repo's `plugins/`) not starting with '_'.
- Installed: entry-point group `lab` (`[project.entry-points.lab] name = "pkg.module"`).
- Local: each `*.py` file in `LAB_PLUGINS_DIR` or `--plugins-dir`.
`LAB_LOAD_PLUGINS=a,b` restricts installed and local plugins to those names (empty: none);
built-ins always load because the core relies on them. A plugin that fails to import or
to register (an exception, or `sys.exit`) is reported by name and the rest still load.

Code comes only from what the user installed or names (`--plugins-dir`, the environment),
never from a run folder: a run records the plugin folder it was trained with only so that
the lab can say which folder to pass when its algorithm is missing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

import lab
from lab.api import hookspecs
from lab.run.registry import Registry


@dataclass
class PluginInfo:
    name: str
    source: str  # builtin | entrypoint | local
    version: str | None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None  # why it failed to load or register


@dataclass
class Lab:
    """A loaded plugin system: the pluggy manager, what was registered, what failed."""

    pm: pluggy.PluginManager
    registry: Registry
    plugins: list[PluginInfo]
    plugins_dir: str | None = None  # the local plugin folder in use (recorded in each run's config)
    warnings: list[str] = field(default_factory=list)  # what the user asked for that is not there

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _wanted(name: str) -> bool:
    allowed = os.environ.get("LAB_LOAD_PLUGINS")
    if allowed is None:
        return True
    return name in {n.strip() for n in allowed.split(",") if n.strip()}


def _builtin_modules() -> list[tuple[str, str]]:
    import lab.plugins as builtin_pkg

    names = sorted(m.name for m in pkgutil.iter_modules(builtin_pkg.__path__) if not m.name.startswith("_"))
    return [(name, f"lab.plugins.{name}") for name in names]


def _load_local(path: Path) -> ModuleType:
    module_name = f"lab_local_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_lab(plugins_dir: str | Path | None = None) -> Lab:
    """Load every plugin and run the register_* hooks."""
    pm = pluggy.PluginManager("lab")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []

    def add(name: str, source: str, version: str | None, load: Any) -> None:
        info = PluginInfo(name, source, version)
        infos.append(info)
        try:
            module = load()
            pm.register(module, name=name)
            info.hooks = sorted(impl_name for impl_name in _hook_names(pm, module))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin (even one calling sys.exit) must not take the others down
            info.error = _describe(exc)

    for name, module_name in _builtin_modules():
        add(name, "builtin", lab.__version__, lambda m=module_name: importlib.import_module(m))

    for ep in importlib.metadata.entry_points(group="lab"):
        if _wanted(ep.name) and pm.get_plugin(ep.name) is None:
            version = ep.dist.version if ep.dist is not None else None
            add(ep.name, "entrypoint", version, ep.load)

    warnings = []
    local_dir = plugins_dir or os.environ.get("LAB_PLUGINS_DIR")
    if local_dir and not Path(local_dir).is_dir():
        given = "--plugins-dir" if plugins_dir else "LAB_PLUGINS_DIR"
        warnings.append(f"{given} '{local_dir}' is not a folder; no local plugins were loaded")
    elif local_dir:
        for path in sorted(Path(local_dir).glob("*.py")):
            if not path.name.startswith("_") and _wanted(path.stem):
                add(path.stem, "local", _peek_version(path), lambda p=path: _load_local(p))
    allowed = os.environ.get("LAB_LOAD_PLUGINS")
    missing = sorted({n.strip() for n in (allowed or "").split(",") if n.strip()} - {info.name for info in infos})
    if missing:
        warnings.append(f"LAB_LOAD_PLUGINS names {', '.join(missing)}, which no installed package or plugin folder "
                        "provides (`lab plugins` lists what is there)")

    registry = Registry()
    _run_registrations(pm, registry, infos)
    return Lab(pm, registry, infos, str(Path(local_dir).resolve()) if local_dir and Path(local_dir).is_dir() else None,
               warnings)


def _peek_version(path: Path) -> str | None:
    """Local one-file plugins may declare `__version__ = "x"`; read it without importing."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return [caller.name for caller in (pm.get_hookcallers(plugin) or [])]


def _run_registrations(pm: pluggy.PluginManager, registry: Registry, infos: list[PluginInfo]) -> None:
    by_name = {info.name: info for info in infos}
    # hook name -> (registering plugin's name -> the `register` callback that hook receives)
    tables: dict[str, Callable[[str], Callable[..., None]]] = {
        "register_algorithms": lambda plugin: lambda cls: registry.add_algorithm(plugin, cls),
        "register_envs": lambda plugin: lambda *args, **kwargs: registry.add_env(plugin, *args, **kwargs),
        "register_datasets": lambda plugin: lambda *args, **kwargs: registry.add_dataset(plugin, *args, **kwargs),
        "register_trackers": lambda plugin: lambda *args, **kwargs: registry.add_tracker(plugin, *args, **kwargs),
        "register_commands": lambda plugin: lambda *args, **kwargs: registry.add_command(plugin, *args, **kwargs),
    }
    for hook_name, make_register in tables.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(register=make_register(impl.plugin_name))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                info = by_name.get(impl.plugin_name)
                if info is not None and info.error is None:
                    info.error = f"{hook_name} failed: {_describe(exc)}"
