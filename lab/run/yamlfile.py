"""The one way the lab reads YAML (a run folder's config.yaml, `--config FILE`, a sweep spec):
bounded work on any input.

A small file can describe an enormous structure: an alias (`*name`) stands for the whole
value its anchor (`&name`) marks, so nine aliases of nine aliases of ... (a "billion laughs")
make 2 KB of YAML a structure of a billion values. PyYAML builds an anchored value once and
shares it, so loading stays quick; the blow-up comes when the lab walks, prints or writes the
structure. So before any value is built, the composed node graph is measured as if every
alias were a copy (each node measured once, stopping at the cap), and a file too big to be
settings, a structure that expands past `MAX_VALUES` values or `MAX_TEXT` characters, or
one that nests past `MAX_DEPTH` levels is one LabError naming the file. Aliases within the
caps keep working: `<<: *base` merge keys in a `--config` file are on purpose.

A key set twice in one mapping is refused too (plain YAML keeps the last one silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.api import LabError

try:  # libyaml's parser: about ten times faster than PyYAML's own, and it caps nesting itself
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # a PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

MAX_BYTES = 1_000_000  # a config.yaml the lab writes is about 2 KB, a sweep spec less
MAX_VALUES = 100_000  # mappings, lists and scalars, every alias counted as a copy
MAX_TEXT = 10_000_000  # characters of the scalars, every alias counted as a copy
MAX_DEPTH = 50  # settings are a mapping of mappings at most a few levels deep

_MERGE = "tag:yaml.org,2002:merge"


class InvalidYAML(LabError):
    """The text is not YAML (a syntax error, a bad encoding, more than one document)."""


class _Loader(_SafeLoader):
    """The safe loader, refusing a key set twice in one mapping."""

    source = "YAML"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *base` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise LabError(f"{self.source} sets '{key}' twice (line {key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


class _Measure:
    """The size of a node graph with every alias expanded: linear in its distinct nodes, since
    each node's size is kept, and stopped as soon as a cap is passed."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (values, characters, levels)
        self.open: set[int] = set()  # the nodes being measured: one met again is inside itself

    def size(self, node: yaml.Node, depth: int = 1) -> tuple[int, int, int]:
        """(values, characters, levels) of `node` met `depth` levels down, or a LabError."""
        known = self.sizes.get(id(node))
        if id(node) in self.open:
            raise LabError(f"{self.source} has a YAML alias inside the value its anchor marks (`&a [*a]`), "
                           "which never ends; write the value out")
        if depth + (known[2] if known else 1) - 1 > MAX_DEPTH:
            raise LabError(f"{self.source} nests deeper than {MAX_DEPTH} levels; settings are a mapping of "
                           "field: value pairs")
        if known is not None:
            return known
        values, text, levels = 1, 0, 1
        if isinstance(node, yaml.ScalarNode):
            text = len(node.value)
        else:
            self.open.add(id(node))
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
            for child in children:
                more, chars, below = self.size(child, depth + 1)
                values, text, levels = values + more, text + chars, max(levels, below + 1)
                if values > MAX_VALUES or text > MAX_TEXT:
                    what = f"{MAX_VALUES:,} values" if values > MAX_VALUES else f"{MAX_TEXT // 1_000_000} MB of text"
                    raise LabError(f"{self.source} expands to more than {what} (YAML aliases `*name` repeat the "
                                   "value `&name` marks); write the settings out without so many aliases")
            self.open.discard(id(node))
        self.sizes[id(node)] = (values, text, levels)
        return values, text, levels


def load_yaml(text: str | bytes, source: str) -> Any:
    """The YAML document in `text`, with every bound checked before a value is built.

    `source` names the file in messages, e.g. "config file 'x.yaml'". A syntax error is an
    InvalidYAML; a duplicate key, a text over `MAX_BYTES` or a structure past the caps a LabError.
    """
    if len(text) > MAX_BYTES:
        raise LabError(f"{source} is over {MAX_BYTES // 1_000_000} MB, too big for settings; pass the settings file")
    try:
        loader = _Loader(text)  # bytes are decoded here: a bad encoding fails already
    except yaml.YAMLError as exc:
        raise InvalidYAML(f"{source} is not valid YAML ({_first_line(exc)}); fix it") from None
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _Measure(source).size(node)
        return loader.construct_document(node)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: an int of over 4300 digits
        raise InvalidYAML(f"{source} is not valid YAML ({_first_line(exc)}); fix it") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, source: str) -> Any:
    """The YAML document in the file `path` (which the caller checked is a file), read no
    further than `MAX_BYTES`: see `load_yaml`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise LabError(f"{source} cannot be read ({exc.strerror or type(exc).__name__}); check its permissions") from None
    return load_yaml(data, source)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
