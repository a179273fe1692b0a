"""MkDocs hook: every public name of the plugin API has a docstring of its own.

The API reference (docs/api.md) is generated from the docstrings by mkdocstrings, which
leaves out members without one; so a missing docstring would silently drop a class or a
method from the reference. On every build this hook imports the plugin API modules and
logs a WARNING for each public class, function, method and property (not starting with
`_`, defined in that module rather than imported or inherited) that has no docstring, and
for each module of the list that no `::: module` block on a page documents. `mkdocs build
--strict` (CI) turns any warning into a failed build.

Run it alone with `python docs/hooks/plugin_api_docstrings.py`: it prints what it would warn about.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.plugin_api")

# What a plugin author uses: each entry a module or one function of a module.
PLUGIN_API = (
    "lab.load",
    "lab.train",
    "lab.api.hookspecs",
    "lab.api.algorithm",
    "lab.api.agent",
    "lab.api.context",
    "lab.api.config",
    "lab.api.errors",
    "lab.api.envs",
    "lab.api.tracking",
    "lab.api.datasets",
    "lab.api.info",
    "lab.api.state",
    "lab.envcheck",
    "lab.schedules",
    "lab.buffers",
    "lab.run.entry.Run",
    "lab.run.policy.AgentPolicy",
    "lab.rl.onpolicy",
    "lab.generative.base",
    "lab.classifiers",
)

DIRECTIVE = re.compile(r"^:::\s*([\w.]+)", re.MULTILINE)


def _own_doc(obj: Any) -> str | None:
    """The docstring `obj` itself carries: not one made up by dataclass or NamedTuple (they
    write the signature, `Name(field, ...)`, into classes that have none)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not doc or not doc.strip():
        return None
    if isinstance(obj, type) and doc.startswith(f"{obj.__name__}("):
        return None
    return doc


def _function_of(member: Any) -> Any | None:
    """The function behind a class member (method, classmethod, staticmethod, property), or None."""
    if isinstance(member, (classmethod, staticmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if inspect.isfunction(member):
        return member
    return None


def _module_members(module: Any) -> list[tuple[str, Any]]:
    """Public classes and functions of `module`: those in `__all__` (which may come from its
    sub-modules, as `lab.buffers` gathers them), else those defined in the module itself."""
    names = getattr(module, "__all__", None)
    members = []
    for name, value in vars(module).items():
        if names is not None and name not in names:
            continue
        if names is None and name.startswith("_"):
            continue
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        home = getattr(value, "__module__", "") or ""
        if home == module.__name__ or (names is not None and home.startswith(module.__name__ + ".")):
            members.append((name, value))
    return members


def _class_gaps(cls: type, where: str) -> list[str]:
    gaps = [] if _own_doc(cls) else [where]
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        function = _function_of(member)
        if function is None or getattr(function, "__module__", None) != cls.__module__:
            continue
        if not _own_doc(function):
            gaps.append(f"{where}.{name}")
    return gaps


def missing_docstrings(entries: tuple[str, ...] = PLUGIN_API) -> list[str]:
    """Dotted names of the plugin API's public objects that have no docstring."""
    gaps: list[str] = []
    for entry in entries:
        try:
            module = importlib.import_module(entry)
            members = _module_members(module)
            if not _own_doc(module):
                gaps.append(entry)
        except ModuleNotFoundError:
            parent, _, name = entry.rpartition(".")
            module = importlib.import_module(parent)
            members = [(name, getattr(module, name))]
        for name, value in members:
            where = f"{module.__name__}.{name}"
            if inspect.isclass(value):
                gaps += _class_gaps(value, where)
            elif not _own_doc(value):
                gaps.append(where)
    return gaps


def undocumented_entries(docs_dir: Path, entries: tuple[str, ...] = PLUGIN_API) -> list[str]:
    """Entries of the plugin API that no `::: name` block on any page renders."""
    rendered = set()
    for page in docs_dir.rglob("*.md"):
        rendered.update(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    return [entry for entry in entries if entry not in rendered]


def on_pre_build(config: Any) -> None:
    """Warn (a failure under --strict) for every gap in the plugin API's docstrings."""
    for name in missing_docstrings():
        log.warning("plugin API: %s has no docstring (the API reference leaves it out); add one", name)
    for entry in undocumented_entries(Path(config["docs_dir"])):
        log.warning("plugin API: %s is not on any page; add `::: %s` to docs/api.md", entry, entry)


if __name__ == "__main__":
    gaps = missing_docstrings() + [f"{e} (not on any page)" for e in undocumented_entries(Path(__file__).parents[1])]
    print("\n".join(gaps) or "every public name of the plugin API has a docstring")
    raise SystemExit(1 if gaps else 0)
