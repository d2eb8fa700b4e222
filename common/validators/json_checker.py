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
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators
from jsonschema.exceptions import ValidationError

from common.frozen import thaw
from common.problems import MAX_PROBLEMS_PER_FILE, Problem

__all__ = ["JsonSchemaChecker"]

#: Longest message kept in a Problem; jsonschema quotes whole instances in its messages.
MAX_MESSAGE_CHARS = 500
_BOM = b"\xef\xbb\xbf"


class JsonSchemaChecker:
    """One compiled JSON Schema; checks whole documents or one document per line."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        document = thaw(schema)
        cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft202012Validator)
        # The validator resolves its references when built and keeps no state while
        # iterating, so this one instance is safe to share between threads.
        self._validator = cls(document, format_checker=cls.FORMAT_CHECKER)

    # ------------------------------------------------------------------ documents

    def check_document(self, path: Path) -> list[Problem]:
        """Problems of the JSON document at ``path``, in path order."""
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return [Problem(f"not UTF-8 text: {exc.reason}", location=f"byte offset {exc.start}")]
        try:
            instance = _parse(text)
        except _NotJson as exc:
            return [Problem(exc.message, location=exc.location())]
        return _capped(self._problems(instance, prefix=""), total_known=False)

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
                    instance = _parse(text)
                except _NotJson as exc:
                    yield Problem(exc.message, location=exc.location(line=number))
                    continue
                yield from _capped_sorted(self._problems(instance, prefix=f"{where}: "))

    def check_value(self, value: Any, prefix: str = "") -> list[Problem]:
        """Problems of one already-parsed JSON value, in path order; ``prefix`` starts each location."""
        return list(_capped_sorted(self._problems(value, prefix)))

    # ------------------------------------------------------------------ shared

    def _problems(self, instance: Any, prefix: str) -> Iterator[tuple[tuple[Any, ...], Problem]]:
        """(sort key, problem) for each schema violation of ``instance``."""
        try:
            for error in self._validator.iter_errors(instance):
                yield _sort_key(error), Problem(_one_line(error.message), location=prefix + error.json_path)
        except RecursionError:
            yield (), Problem("document nested too deeply to validate", location=prefix + "$")


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
        more = found - len(kept)
        kept.append(Problem(f"{more} more problem{'s' if more != 1 else ''} found; only the first "
                            f"{MAX_PROBLEMS_PER_FILE} are listed"))
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
    # Integers before strings at each step, so items[2] sorts before items[10].
    steps = tuple((0, step, "") if isinstance(step, int) else (1, 0, str(step)) for step in error.absolute_path)
    return steps, error.message, error.validator


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _NotJson(f"invalid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    except RecursionError:
        raise _NotJson("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise _NotJson(f"invalid JSON: {exc}") from None
