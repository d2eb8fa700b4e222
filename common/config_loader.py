"""Reading the configuration files (registry YAML, batch JSON, JSON Schema files) safely.

The parsers alone would let a hostile or careless file take the process down before a
single key is checked, so every configuration file goes through here, with limits:

* **UTF-8 only.** A file that is not UTF-8 is an error naming the byte offset and line.
* **Nesting depth** at most :data:`MAX_DEPTH` levels (YAML: counted through aliases too).
  Deeper documents are refused before any recursive code (ours, jsonschema's) walks them.
* **Duplicate keys** in one mapping / object are an error naming the key (and, in YAML,
  both lines): YAML and JSON parsers would silently keep the last one.
* **YAML aliases** (``*name``) are bounded: the nodes they bring in (counted as expanded,
  so an alias of an alias of a list counts every element) may not exceed
  :data:`ALIAS_NODE_FLOOR` or :data:`ALIAS_NODE_RATIO` times the nodes written in the
  file, whichever is larger. An alias "bomb" of a few hundred bytes that would expand to
  hundreds of millions of nodes stops at the alias that crosses the line. Anchors and
  merge keys (``<<: *defaults``) of ordinary files stay far below it. Recursive aliases
  (a node containing itself) are refused.
* **JSON**: ``NaN`` / ``Infinity`` are refused (not JSON).

Errors are :class:`~common.exceptions.ConfigError` with one line: the file, then
``service '<id>'`` / ``job #<n>`` when the problem lies inside one (the ``sections``
argument says which top-level keys hold them), then the key, then the problem. Values
are never quoted.

YAML is parsed by libyaml when it is installed (``yaml.CParser``, the parser of
``CSafeLoader``) and composed by PyYAML's Python composer, which is where the limits
are hooked; without libyaml the pure-Python ``SafeLoader`` parser is used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from common.exceptions import ConfigError

__all__ = ["ALIAS_NODE_FLOOR", "ALIAS_NODE_RATIO", "MAX_DEPTH", "ConfigLoader", "PurePythonConfigLoader",
           "load_json_file", "load_yaml_file"]

#: Deepest nesting of mappings/sequences accepted in a configuration file.
MAX_DEPTH = 64
#: Nodes that YAML aliases may bring in, at least ...
ALIAS_NODE_FLOOR = 100_000
#: ... or this many times the nodes written in the file, whichever is larger.
ALIAS_NODE_RATIO = 10
_MERGE_TAG = "tag:yaml.org,2002:merge"
Path_ = tuple[Any, ...]  # a key path: str keys and int indexes



class _PyParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python reader, scanner and parser, initialised as ``CParser`` is."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml's parser when present: ~4x faster than the pure-Python one
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _Parser = _PyParser


class _LimitError(yaml.MarkedYAMLError):
    """A limit of ours was hit while composing: carries the key path where it happened."""

    def __init__(self, problem: str, mark: Any, path: Path_) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.path = path


class _LimitedComposer(Composer, SafeConstructor, Resolver):
    """PyYAML's composer and safe constructor, with the limits of this module. Mixed with a
    parser (libyaml's or the pure-Python one) into a loader."""

    def _start(self) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._path: list[Any] = []       # key path of the node being composed
        self._heights: list[int] = [0]   # per open node: the height of its tallest child so far
        self._written = 0                # nodes written in the file
        self._aliased = 0                # nodes brought in by aliases, counted expanded

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if isinstance(index, ScalarNode):
            self._path.append(index.value)
        elif isinstance(index, int):
            self._path.append(index)
        elif index is not None:
            self._path.append("?")
        try:
            if self.check_event(AliasEvent):
                return self._compose_alias(parent, index)
            return self._compose_new(parent, index)
        finally:
            if index is not None:
                self._path.pop()

    def _compose_alias(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        node = Composer.compose_node(self, parent, index)  # raises on an undefined alias
        if not hasattr(node, "expanded"):  # its anchor is still being composed: it contains itself
            raise _LimitError("recursive alias (a node that contains itself)", event.start_mark, tuple(self._path))
        size, height = node.expanded  # set when the anchored node was completed
        self._aliased += size
        if self._aliased > max(ALIAS_NODE_FLOOR, ALIAS_NODE_RATIO * self._written):
            raise _LimitError(f"aliases expand to {self._aliased:,}+ nodes, past the limit "
                              f"({ALIAS_NODE_FLOOR:,}, or {ALIAS_NODE_RATIO}x the nodes written)",
                              event.start_mark, tuple(self._path))
        self._grew(height, event)
        return node

    def _compose_new(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if len(self._heights) > MAX_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_DEPTH} levels", event.start_mark, tuple(self._path))
        self._written += 1
        before = self._written + self._aliased
        self._heights.append(0)
        try:
            node = Composer.compose_node(self, parent, index)
        finally:
            height = self._heights.pop() + 1
        node.expanded = (self._written + self._aliased - before + 1, height)
        self._grew(height, event)
        return node

    def compose_mapping_node(self, anchor: str | None) -> Node:
        node = Composer.compose_mapping_node(self, anchor)
        self._check_duplicates(node)
        return node

    def _grew(self, height: int, event: Any) -> None:
        """A child of height ``height`` joined the open node: check the depth it reaches."""
        depth = len(self._heights) - 1  # open nodes above the child
        if depth + height > MAX_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_DEPTH} levels", event.start_mark, tuple(self._path))
        self._heights[-1] = max(self._heights[-1], height)

    def _check_duplicates(self, node: MappingNode) -> None:
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            key = "<<" if key_node.tag == _MERGE_TAG else self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # unhashable: the constructor reports it
                continue
            if first is not key_node:
                raise _LimitError(f"duplicate key (first at line {first.start_mark.line + 1})",
                                  key_node.start_mark, (*self._path, str(key)))

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """As PyYAML's, but a value Python cannot build (an int of 5,000 digits, a
        timestamp in month 13) is a YAML error at its line instead of a ValueError."""
        try:
            return SafeConstructor.construct_object(self, node, deep)
        except (ValueError, OverflowError) as exc:
            reason = _one_line(str(exc))[:120]  # Python's words for these never quote the value
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value: {reason}", node.start_mark) from None


class ConfigLoader(_LimitedComposer, _Parser):  # type: ignore[misc, valid-type]
    """The safe YAML loader of configuration files (``yaml.load(text, Loader=ConfigLoader)``):
    libyaml's parser when installed, refusing duplicate keys, nesting deeper than
    :data:`MAX_DEPTH` and alias expansion past the budget."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        self._start()


class PurePythonConfigLoader(_LimitedComposer, _PyParser):
    """:class:`ConfigLoader` over PyYAML's pure-Python parser (used without libyaml)."""

    def __init__(self, stream: str) -> None:
        _PyParser.__init__(self, stream)
        self._start()


# --------------------------------------------------------------------------- files


def load_yaml_file(path: Path, what: str, sections: Mapping[str, str] | None = None,
                   loader_class: type[_LimitedComposer] = ConfigLoader) -> Any:
    """The single YAML document of ``path`` (``what`` names it in errors: "registry")."""
    text = _read_text(path, what)
    try:
        loader = loader_class(text)  # type: ignore[call-arg]
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _LimitError as exc:
        raise _error(path, exc.path, sections, f"{exc.problem}{_at(exc.problem_mark)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(_one_line(f"{path}: invalid YAML{_at(mark)}: {problem}"), file=str(path)) from None


def load_json_file(path: Path, what: str, sections: Mapping[str, str] | None = None) -> Any:
    """The JSON document of ``path``: no duplicate keys, no NaN, at most :data:`MAX_DEPTH` deep."""
    text = _read_text(path, what)
    try:
        document = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except RecursionError:
        raise _error(path, (), sections, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise ConfigError(_one_line(f"{path}: malformed JSON: {exc}"), file=str(path)) from None
    _check_tree(path, document, sections)
    return document


class _Duplicated(dict):  # type: ignore[type-arg]
    """A JSON object that had a key twice (found and reported after parsing, with its path)."""

    duplicate: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    dup = _Duplicated(obj)
    seen: set[str] = set()
    dup.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return dup


_CONTAINERS = (dict, list, _Duplicated)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_tree(path: Path, document: Any, sections: Mapping[str, str] | None) -> None:
    """Walk ``document`` level by level, without recursion: depth, and objects that had a
    duplicate key. Paths are built only for the node at fault."""
    level, depth = [document], 0
    while level:
        depth += 1
        below: list[Any] = []
        for value in level:
            kind = type(value)
            if kind is _Duplicated:
                raise _error(path, (*_path_to(document, value), value.duplicate), sections, "duplicate key")
            below += [c for c in (value.values() if kind is dict else value) if type(c) in _CONTAINERS]
        if below and depth >= MAX_DEPTH:
            raise _error(path, _path_to(document, below[0]), sections, f"nested deeper than {MAX_DEPTH} levels")
        level = below


def _path_to(document: Any, target: Any) -> Path_:
    """The key path from ``document`` to the container ``target`` (found by identity)."""
    stack: list[tuple[Any, Path_]] = [(document, ())]
    while stack:
        value, at = stack.pop()
        if value is target:
            return at
        items = value.items() if isinstance(value, dict) else enumerate(value)
        stack.extend((child, (*at, key)) for key, child in items if isinstance(child, (dict, list)))
    return ()


def _read_text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}", file=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                          f"(line {line}) cannot be decoded", file=str(path)) from None
    return text.removeprefix("\ufeff")


def _error(path: Path, at: Path_, sections: Mapping[str, str] | None, problem: str) -> ConfigError:
    """``file: service 'x': key 'a.b[0]': problem`` (the section part when ``at`` lies in one)."""
    parts = [str(path)]
    if sections and len(at) >= 2 and at[0] in sections:
        name = at[1]
        parts.append(f"{sections[at[0]]} '{name}'" if isinstance(name, str) else f"{sections[at[0]]} #{name + 1}")
        at = at[2:]
    key = _key(at)
    if key:
        parts.append(f"key '{key}'")
    return ConfigError(_one_line(": ".join(parts) + f": {problem}"), file=str(path), key=key)


def _key(at: Path_, shown: int = 8) -> str:
    """``a.b[0].c``; a deep path is cut after ``shown`` parts."""
    out = ""
    for part in at[:shown]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out + ("..." if len(at) > shown else "")


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())
