"""JSON Schema validation of ``.json`` documents and ``.jsonl``/``.ndjson`` line files.

Reads the service's ``validate.json_schema`` (already loaded and checked by
:mod:`common.job_config`). The schema is compiled once, with the validator class its
``$schema`` names (draft 2020-12 when it names none) and that draft's format checker,
so ``"format": "date"`` and friends are enforced.

Problems are data, never exceptions:

* a schema violation is ``Problem(message, location="$.items[3].price")``; in a line
  file the location is prefixed with the line number, ``"line 7: $.price"``;
* text that is not JSON is ``Problem("invalid JSON: ...", location="line L, column C")``;
* bytes that are not UTF-8 are one problem naming where decoding failed.

At most :data:`~common.problems.MAX_PROBLEMS_PER_FILE` problems are kept per file, plus
one last problem counting the ones left out. A checker holds no per-call state, so one
instance is shared by every job and thread of the process.

Two engines
-----------
The schema is compiled twice: by ``jsonschema`` (pure Python, ~60-90 documents/s of
20 KB) and, when it is installed and accepts the schema, by ``jsonschema-rs`` (Rust,
validating ~150x faster; a whole check is then mostly ``json.loads``), both with
formats asserted. Every value is checked like this:

1. ``jsonschema-rs`` says valid: no problems, and ``jsonschema`` is never run. This is
   the fast path; most files take it.
2. ``jsonschema-rs`` says invalid: ``jsonschema`` lists the problems, exactly as it did
   before the fast path (same messages, locations, order and cap). When it finds some
   but not all (a type error it reports beside a ``uri`` it does not check), the list
   is still jsonschema's alone; the rest shows once those are fixed.
3. ``jsonschema-rs`` says invalid but ``jsonschema`` finds nothing (or cannot finish,
   nesting too deep for Python): the problems are ``jsonschema-rs``'s own errors, with
   the same ``$.a[0].b`` locations. An invalid verdict is never turned into a valid one.

So **jsonschema-rs decides validity** and jsonschema words the problems whenever it
agrees. Where the two disagree, jsonschema-rs is the one that follows the specification
(measured with jsonschema 4.26 and jsonschema-rs 0.60):

* formats jsonschema only asserts with an optional package that is not installed
  (``uri``, ``uri-reference``, ``iri``, ``uri-template``, ``hostname``, ``duration``)
  are asserted; ``email`` is checked properly (``a@@b.com`` is invalid; jsonschema only
  looks for an ``@``); ``date`` and ``time`` are asserted in drafts 4 and 6 too, and
  draft 7's ``contentMediaType``/``contentEncoding`` are;
* ``pattern`` and ``patternProperties`` are ECMA-262 regular expressions, as the
  specification says, not Python ``re``: ``\\d`` and ``\\w`` are ASCII only, ``$`` does
  not match before a trailing newline (``"abc\\n"`` fails ``^abc$``), ``\\s`` includes
  U+FEFF; the ``regex`` format accepts ECMA syntax (``(?<name>...)``, ``\\p{L}``);
* ``multipleOf`` is exact: ``0.3`` is a multiple of ``0.1`` (Python's float division
  said no), and huge integers no longer overflow;
* leap seconds (``23:59:60``) are valid ``date-time``.

Both engines agree on everything else we checked: ``1.0`` is an integer (not in draft 4),
``true`` is not a number, integers of any size compare exactly, local ``$ref`` and
``$defs``, Unicode strings (lengths count code points).

jsonschema decides alone, exactly as before the fast path, when:

* ``jsonschema-rs`` is not installed, or the checker is built with ``fast=False``;
* it cannot compile the schema: a draft it does not support (draft 3, an unknown
  ``$schema``), a ``pattern`` that is Python but not ECMA-262 (``a{,3}``, ``\\Z``), or
  a ``$ref`` to another document. It is built ``offline``, so it never fetches one
  over the network or from the file system; jsonschema then resolves it as it always
  did (note: jsonschema itself still fetches an ``http(s)`` reference when validation
  reaches it, with a ``DeprecationWarning``);
* the two would read the schema as different drafts;
* a value it cannot represent faithfully: a float that is not finite (``1e400`` parses
  as infinity; ``check_value`` may also get NaN), a string holding a lone surrogate
  (``"\\ud800"``) when jsonschema-rs needs its text (it refuses to encode it), and in
  ``check_value`` anything that is not plain JSON data (a
  tuple, a non-string key, a ``Mapping`` that is not a ``dict``...);
* the schema can recurse (a ``$ref`` cycle) and the value is nested deeper than
  :data:`RS_MAX_DEPTH`: Rust recursion is not bounded like Python's and would overflow
  the thread's stack; jsonschema turns its ``RecursionError`` into a problem.

Threads: a compiled ``jsonschema-rs`` validator is immutable (a Rust ``Send + Sync``
value), so, like the jsonschema one, a single instance serves every thread. It holds
the GIL while it validates: threads do not validate in parallel, as with jsonschema.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import jsonschema.validators
from jsonschema.exceptions import ValidationError

from common.frozen import thaw
from common.problems import MAX_PROBLEMS_PER_FILE, Problem, more_problems

try:
    import jsonschema_rs
except ImportError:  # the accelerator is optional: jsonschema alone gives the same problems, slowly
    jsonschema_rs = None  # type: ignore[assignment]

__all__ = ["RS_MAX_DEPTH", "JsonSchemaChecker"]

#: Longest message kept in a Problem; jsonschema quotes whole instances in its messages.
MAX_MESSAGE_CHARS = 500
#: Deepest value handed to jsonschema-rs when the schema can recurse (a ``$ref`` cycle);
#: about 0.3-1 KB of stack per level, far below the 8 MB of a thread's stack.
RS_MAX_DEPTH = 1000
_BOM = b"\xef\xbb\xbf"
_TOO_DEEP = "document nested too deeply to validate"
#: jsonschema's class -> the jsonschema-rs class that must read the schema the same way.
_RS_CLASS_NAMES = {
    jsonschema.Draft4Validator: "Draft4Validator",
    jsonschema.Draft6Validator: "Draft6Validator",
    jsonschema.Draft7Validator: "Draft7Validator",
    jsonschema.Draft201909Validator: "Draft201909Validator",
    jsonschema.Draft202012Validator: "Draft202012Validator",
}
#: The JSON path step a key can take unquoted (as jsonschema's ``ValidationError.json_path``).
_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


class JsonSchemaChecker:
    """One compiled JSON Schema; checks whole documents or one document per line.

    ``fast=False`` keeps jsonschema alone (no jsonschema-rs fast path): the reference
    behaviour, for comparisons. :attr:`fast_path` says whether the fast path is on.
    """

    def __init__(self, schema: Mapping[str, Any], fast: bool = True) -> None:
        document = thaw(schema)
        cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft202012Validator)
        # The validator resolves its references when built and keeps no state while
        # iterating, so this one instance is safe to share between threads.
        self._validator = cls(document, format_checker=cls.FORMAT_CHECKER)
        # Immutable once built: shared by threads too.
        self._rs = _compile_rs(document, cls) if fast else None
        self._depth_limited = self._rs is not None and _may_recurse(document)

    @property
    def fast_path(self) -> bool:
        """True when jsonschema-rs compiled the schema and decides validity."""
        return self._rs is not None

    # ------------------------------------------------------------------ documents

    def check_document(self, path: Path) -> list[Problem]:
        """Problems of the JSON document at ``path``, in path order."""
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return [Problem(f"not UTF-8 text: {exc.reason}", location=f"byte offset {exc.start}")]
        try:
            instance, finite = _parse(text)
        except _NotJson as exc:
            return [Problem(exc.message, location=exc.location())]
        return _capped(self._problems(instance, "", self._rs_can_take(text, instance, finite)), total_known=False)

    # ------------------------------------------------------------------ line files

    def check_lines(self, path: Path) -> list[Problem]:
        """Problems of the JSON-lines file at ``path``, streamed one line at a time.

        Blank lines are skipped; line numbers count every physical line from 1.
        """
        return _capped(self._line_problems(Path(path)), total_known=True)

    def _line_problems(self, path: Path) -> Iterator[Problem]:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                if not raw.strip():
                    continue
                where = f"line {number}"
                try:
                    text = raw.rstrip(b"\r\n").decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield Problem(f"not UTF-8 text: {exc.reason}", location=f"{where}, byte offset {exc.start}")
                    continue
                try:
                    instance, finite = _parse(text)
                except _NotJson as exc:
                    yield Problem(exc.message, location=exc.location(line=number))
                    continue
                rs_ok = self._rs_can_take(text, instance, finite)
                yield from _capped_sorted(self._problems(instance, f"{where}: ", rs_ok))

    def check_value(self, value: Any, prefix: str = "") -> list[Problem]:
        """Problems of one already-parsed JSON value, in path order; ``prefix`` starts each location."""
        rs_ok = self._rs is not None and _plain_json(value, RS_MAX_DEPTH if self._depth_limited else None)
        return list(_capped_sorted(self._problems(value, prefix, rs_ok)))

    # ------------------------------------------------------------------ shared

    def _rs_can_take(self, text: str, instance: Any, finite: bool) -> bool:
        """Whether jsonschema-rs may judge ``instance``, parsed from ``text``."""
        if self._rs is None or not finite:
            return False
        # Nesting depth only matters when the schema can recurse; the number of brackets
        # bounds it without walking the value.
        return (not self._depth_limited or text.count("[") + text.count("{") <= RS_MAX_DEPTH
                or _depth_at_most(instance, RS_MAX_DEPTH))

    def _problems(self, instance: Any, prefix: str, rs_ok: bool) -> Iterator[tuple[tuple[Any, ...], Problem]]:
        """(sort key, problem) for each schema violation of ``instance``."""
        if rs_ok:
            valid = self._rs_is_valid(instance)
            if valid:
                return
            if valid is False:
                yield from self._rs_invalid_problems(instance, prefix)
                return
        yield from self._jsonschema_problems(instance, prefix)

    def _rs_is_valid(self, instance: Any) -> bool | None:
        """jsonschema-rs's verdict, or None when it cannot take the value (a lone surrogate...)."""
        try:
            return bool(self._rs.is_valid(instance))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - any refusal leaves the verdict to jsonschema
            return None

    def _jsonschema_errors(self, instance: Any) -> Iterator[ValidationError]:
        """jsonschema's errors of ``instance``: the only place the slow engine runs."""
        return self._validator.iter_errors(instance)  # type: ignore[no-any-return]

    def _rs_errors(self, instance: Any) -> Iterator[Any]:
        """jsonschema-rs's errors of ``instance``, when jsonschema finds none."""
        return self._rs.iter_errors(instance)  # type: ignore[no-any-return,union-attr]

    def _jsonschema_problems(self, instance: Any, prefix: str) -> Iterator[tuple[tuple[Any, ...], Problem]]:
        """The problems jsonschema finds: the jsonschema-only path."""
        try:
            for error in self._jsonschema_errors(instance):
                yield _sort_key(error), Problem(_one_line(error.message), location=prefix + error.json_path)
        except RecursionError:
            yield (), Problem(_TOO_DEEP, location=prefix + "$")

    def _rs_invalid_problems(self, instance: Any, prefix: str) -> Iterator[tuple[tuple[Any, ...], Problem]]:
        """jsonschema-rs said invalid: jsonschema's problems if it finds any, else jsonschema-rs's."""
        found = False
        try:
            for error in self._jsonschema_errors(instance):
                found = True
                yield _sort_key(error), Problem(_one_line(error.message), location=prefix + error.json_path)
        except RecursionError:
            if found:  # as on the jsonschema-only path
                yield (), Problem(_TOO_DEEP, location=prefix + "$")
                return
        if not found:
            yield from self._rs_problems(instance, prefix)

    def _rs_problems(self, instance: Any, prefix: str) -> Iterator[tuple[tuple[Any, ...], Problem]]:
        """jsonschema-rs's own errors, located like jsonschema's."""
        try:
            errors = [(list(e.instance_path), e.message, _rs_keyword(e)) for e in self._rs_errors(instance)]
        except Exception as exc:  # noqa: BLE001 - e.g. an error's value nested too deeply to hand back
            errors, reason = [], f": {_one_line(str(exc))}"
        else:
            reason = ""
        if not errors:  # never lose the invalid verdict
            yield (), Problem(f"does not match the schema (the errors could not be listed{reason})",
                              location=prefix + "$")
            return
        for steps, message, keyword in errors:
            yield _path_key(steps, message, keyword), Problem(_one_line(message), location=prefix + _json_path(steps))


def _compile_rs(document: Any, cls: type) -> Any:
    """The jsonschema-rs validator of ``document``, or None where jsonschema must decide alone."""
    name = _RS_CLASS_NAMES.get(cls)
    if jsonschema_rs is None or name is None:
        return None
    try:
        # offline: a $ref to another document fails here instead of being fetched.
        validator = jsonschema_rs.validator_for(document, validate_formats=True, offline=True)
    except Exception:  # noqa: BLE001 - unknown draft or meta-schema, remote $ref, non-ECMA pattern, old version
        return None
    # Both must read the schema as the same draft.
    return validator if type(validator) is getattr(jsonschema_rs, name, None) else None


def _may_recurse(schema: Any) -> bool:
    """Whether validation can go deeper than the schema's own nesting (a possible ``$ref`` cycle).

    Conservative: anything but local ``#/json/pointer`` references, or a subschema with
    its own ``$id``/``id`` (a new base for its references), counts as a possible cycle.
    """
    refs: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []  # (where the $ref is, what it points to)
    stack: list[tuple[Any, tuple[Any, ...]]] = [(schema, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$dynamicRef", "$recursiveRef"):
                    return True
                if key in ("$id", "id") and where and isinstance(value, str):
                    return True
                if key == "$ref":
                    target = _local_target(schema, value)
                    if target is None:
                        return True
                    refs.append((where, target))
                stack.append((value, (*where, key)))
        elif isinstance(node, list):
            stack.extend((value, (*where, i)) for i, value in enumerate(node))
    # Following the reference at index i leads into its target, where references j with
    # their location inside that target can be followed next: a cycle can recurse forever.
    following = [[j for j, (where, _) in enumerate(refs) if where[: len(target)] == target] for _, target in refs]
    state = [0] * len(refs)  # 0 unseen, 1 on the current path, 2 done

    def cycle_from(i: int) -> bool:
        state[i] = 1
        for j in following[i]:
            if state[j] == 1 or (state[j] == 0 and cycle_from(j)):
                return True
        state[i] = 2
        return False

    return any(state[i] == 0 and cycle_from(i) for i in range(len(refs)))


def _local_target(schema: Any, ref: Any) -> tuple[Any, ...] | None:
    """The path ``ref`` points to within ``schema`` when it is a local JSON pointer, else None."""
    if not isinstance(ref, str) or not ref.startswith("#") or (len(ref) > 1 and ref[1] != "/"):
        return None
    node, path = schema, list[Any]()
    for raw in ref[2:].split("/") if len(ref) > 1 else []:
        step = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and step in node:
            node = node[step]
            path.append(step)
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
            path.append(int(step))
        else:
            return None
    return tuple(path)


def _depth_at_most(value: Any, limit: int) -> bool:
    """Whether containers in ``value`` nest at most ``limit`` deep (the outermost is depth 1)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return False
                stack.append((child, depth + 1))
    return True


def _plain_json(value: Any, max_depth: int | None) -> bool:
    """Whether ``value`` is plain JSON data that jsonschema-rs reads as jsonschema does.

    Only ``dict`` (with ``str`` keys), ``list``, ``str``, ``int``, ``bool``, None and
    finite ``float``, with containers nested at most ``max_depth`` deep when given.
    """
    if type(value) is not dict and type(value) is not list:
        return _plain_scalar(value)
    limit = max_depth if max_depth is not None else math.inf
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            if any(type(key) is not str for key in node):
                return False
            children: Iterable[Any] = node.values()
        else:
            children = node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= limit:
                    return False
                stack.append((child, depth + 1))
            elif not (kind in _SCALARS or kind is float and math.isfinite(child)):
                return False
    return True


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    return kind in _SCALARS or kind is float and math.isfinite(value)


_SCALARS = frozenset({str, int, bool, type(None)})


def _capped(items: Iterable[Any], total_known: bool) -> list[Problem]:
    """At most MAX_PROBLEMS_PER_FILE problems, plus one counting the rest.

    ``items`` are problems already in order (``total_known``) or (key, problem) pairs,
    of which the smallest keys are kept, with bounded memory.
    """
    counter = itertools.count()
    counted = _counting(items, counter)
    if total_known:
        kept = list(itertools.islice(counted, MAX_PROBLEMS_PER_FILE))
    else:
        kept = [p for _, p in heapq.nsmallest(MAX_PROBLEMS_PER_FILE, counted, key=lambda kp: kp[0])]
    for _ in counted:  # count what was left out
        pass
    found = next(counter)
    if found > len(kept):
        kept.append(more_problems(found - len(kept)))
    return kept


def _capped_sorted(pairs: Iterable[tuple[tuple[Any, ...], Problem]]) -> Iterator[Problem]:
    """Problems of one line in path order (a line holds few; the file-level cap bounds output)."""
    for _, problem in sorted(pairs, key=lambda kp: kp[0]):
        yield problem


def _counting(items: Iterable[Any], counter: itertools.count[int]) -> Iterator[Any]:
    for item in items:
        next(counter)
        yield item


def _sort_key(error: ValidationError) -> tuple[Any, ...]:
    return _path_key(error.absolute_path, error.message, error.validator)


def _path_key(path: Iterable[Any], message: str, keyword: Any) -> tuple[Any, ...]:
    # Integers before strings at each step, so items[2] sorts before items[10].
    steps = tuple((0, step, "") if isinstance(step, int) else (1, 0, str(step)) for step in path)
    return steps, message, keyword


def _json_path(path: Iterable[Any]) -> str:
    """``$.items[3]['a b']``, as jsonschema's ``ValidationError.json_path``."""
    text = "$"
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        elif _PLAIN_KEY.match(step):
            text += "." + step
        else:
            text += "['" + step.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return text


def _rs_keyword(error: Any) -> str:
    """The keyword a jsonschema-rs error is about (``minimum``, ``format``...)."""
    name = getattr(getattr(error, "kind", None), "name", None)
    if isinstance(name, str):
        return name
    return next((str(step) for step in reversed(error.schema_path) if isinstance(step, str)), "")


def _one_line(message: str) -> str:
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return message


class _NotJson(Exception):
    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def location(self, line: int | None = None) -> str | None:
        """``line L, column C``; ``line`` is the physical line of a line file."""
        if line is not None:
            return f"line {line}, column {self.column}" if self.column is not None else f"line {line}"
        if self.line is None:
            return None
        return f"line {self.line}, column {self.column}"


class _NotFinite(Exception):
    """A number too large for a float (``1e400``), which Python reads as infinity."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if value - value != 0.0:  # inf - inf is nan
        raise _NotFinite
    return value


def _parse(text: str) -> tuple[Any, bool]:
    """The JSON value of ``text``, and whether all its floats are finite."""
    try:
        try:
            return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float), True
        except _NotFinite:  # rare: read it again as before (infinity), for jsonschema alone
            return json.loads(text, parse_constant=_reject_constant), False
    except json.JSONDecodeError as exc:
        raise _NotJson(f"invalid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    except RecursionError:
        raise _NotJson("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise _NotJson(f"invalid JSON: {exc}") from None
