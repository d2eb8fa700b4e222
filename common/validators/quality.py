"""Data-quality rules (``validate.quality``), the built-in ``quality`` validator.

Per file, on the rows of ``.csv``, ``.jsonl``/``.ndjson``, ``.json`` (an array of objects, or
one object), ``.parquet`` and ``.xlsx`` files (also compressed, or in an archive), read once,
streamed:

==============  ==================================================================
``min_rows``    at least this many rows (a CSV or xlsx header is not a row)
``max_rows``    at most this many rows
``unique``      each entry a column (``id``), a JSON path (``$.order.id``) or a list of
                them (a composite key): no two rows share its value. Only a 16-byte hash
                of each value is kept, never the rows; rows where it is empty are skipped
``not_null``    these columns or JSON paths are present and not empty in every row
``max_age``     ``{column, within}``: the newest value of the date/datetime ``column`` is
                no older than ``within`` (``36h``, ``7d``, ``2w``; ``s m h d w``): a feed
                that stopped updating. A date counts as its day's end (UTC); a datetime
                without offset as UTC; values that are not dates are ignored
==============  ==================================================================

Per job, ``min_files``: a job that lands fewer valid files (uploaded, or already there)
fails with the reason (:class:`orchestrator.job_runner.JobRunner`).

Problems: ``row 7, column 'id'`` (``line 7: $.id`` for JSON Lines, ``record 7`` for a JSON
array), and ``file`` for the counts and ``column 'day'`` for ``max_age``. Rows that cannot be
read (a line that is not JSON) are left to the format's own validator.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from common.exceptions import ConfigError
from common.interfaces.validator import Validator, ValidatorSetup
from common.problems import MAX_PROBLEMS_PER_FILE, Problem, more_problems
from common.validators.builtin import owned_keys

__all__ = ["QualityValidator", "file_rows", "parse_duration"]

ROW_SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson", ".parquet", ".xlsx")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MISSING = object()


def parse_duration(text: str) -> dt.timedelta:
    """``36h`` -> 36 hours; units ``s m h d w``. Raises ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 36h, 7d or 2w")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def file_rows(path: Path, name: str, delimiter: str = ",",
              sheet: str | None = None) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(location, row) of each record of a row file, by the suffix of ``name``, streamed
    (a ``.json`` document is parsed whole, as its validation does)."""
    lowered = name.rstrip().lower()
    if lowered.endswith(".csv"):
        with open(path, encoding="utf-8-sig", newline="", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            columns = next(reader, None) or []
            for number, row in enumerate(reader, start=2):
                if row:
                    yield f"row {number}", dict(zip(columns, row, strict=False))
    elif lowered.endswith((".jsonl", ".ndjson")):
        with open(path, "rb") as fb:
            for number, raw in enumerate(fb, start=1):
                try:
                    item = json.loads(raw) if raw.strip() else None
                except ValueError:
                    continue
                if isinstance(item, dict):
                    yield f"line {number}", item
    elif lowered.endswith(".json"):
        with open(path, "rb") as fb:
            try:
                document = json.load(fb)
            except ValueError:
                return
        items = document if isinstance(document, list) else [document]
        for number, item in enumerate(items, start=1):
            if isinstance(item, dict):
                yield f"record {number}", item
    elif lowered.endswith(".parquet"):
        from common.validators.parquet_checker import parquet_rows

        for number, record in enumerate(parquet_rows(path), start=1):
            yield f"row {number}", record
    elif lowered.endswith(".xlsx"):
        from common.validators.xlsx_checker import xlsx_rows

        header: list[str] = []
        for number, cells in xlsx_rows(path, sheet):
            if number == 1:
                header = ["" if c is None else str(c).strip() for c in cells]
            elif any(c is not None and c != "" for c in cells):
                yield f"row {number}", dict(zip(header, cells, strict=False))


def _value(row: Mapping[str, Any], key: str) -> Any:
    """The value of column ``key`` or JSON path ``$.a.b`` in ``row`` (``_MISSING`` when absent)."""
    if not key.startswith("$"):
        return row.get(key, _MISSING)
    value: Any = row
    for part in key.lstrip("$").strip(".").split("."):
        if not part:
            continue
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _empty(value: Any) -> bool:
    return value is _MISSING or value is None or (isinstance(value, str) and not value.strip())


def _where(location: str, key: str) -> str:
    return f"{location}: {key}" if key.startswith("$") else f"{location}, column '{key}'"


def _moment(value: Any) -> dt.datetime | None:
    """A date/datetime value as an aware UTC moment (a date: the end of its day); else None."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                value = dt.date.fromisoformat(text)
            else:
                value = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return None


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class QualityValidator(Validator):
    """``validate.quality``: row counts, unique keys, not-null columns and freshness."""

    validate_schema: ClassVar[Mapping[str, Any]] = owned_keys("quality")
    suffixes = ROW_SUFFIXES

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        super().__init__(config, setup)
        rules = config.get("quality", {})
        self.min_rows: int | None = rules.get("min_rows")
        self.max_rows: int | None = rules.get("max_rows")
        self.unique: list[tuple[str, ...]] = [
            (entry,) if isinstance(entry, str) else tuple(entry) for entry in rules.get("unique", ())]
        self.not_null: tuple[str, ...] = tuple(rules.get("not_null", ()))
        age = rules.get("max_age")
        self.age_column: str | None = age["column"] if age else None
        try:
            self.within = parse_duration(age["within"]) if age else None
        except ValueError as exc:
            raise ConfigError(f"validate.quality.max_age.within: {exc}", key="validate.quality.max_age.within") from None
        validate = setup.validate
        self.delimiter = validate.csv.delimiter if validate is not None and validate.csv is not None else ","
        self.sheet = validate.xlsx.sheet if validate is not None and validate.xlsx is not None else None
        self._per_file = any(k in rules for k in ("min_rows", "max_rows", "unique", "not_null", "max_age"))

    def applies_to(self, name: str) -> bool:
        return self._per_file and super().applies_to(name)

    def check(self, path: Path, name: str) -> list[Problem]:
        rows: list[Problem] = []
        more = 0
        seen: list[set[bytes]] = [set() for _ in self.unique]
        count = 0
        newest: dt.datetime | None = None
        for location, row in file_rows(path, name, self.delimiter, self.sheet):
            count += 1
            found = self._row_problems(location, row, seen)
            if found:
                room = MAX_PROBLEMS_PER_FILE - len(rows)
                rows.extend(found[:max(room, 0)])
                more += max(len(found) - max(room, 0), 0)
            if self.age_column is not None:
                moment = _moment(_value(row, self.age_column))
                if moment is not None and (newest is None or moment > newest):
                    newest = moment
        problems = self._file_problems(count, newest) + rows
        if len(problems) > MAX_PROBLEMS_PER_FILE:
            more += len(problems) - MAX_PROBLEMS_PER_FILE
            problems = problems[:MAX_PROBLEMS_PER_FILE]
        return problems + [more_problems(more)] if more else problems

    def _row_problems(self, location: str, row: Mapping[str, Any], seen: Sequence[set[bytes]]) -> list[Problem]:
        found = [Problem("empty value in a not_null column", _where(location, key))
                 for key in self.not_null if _empty(_value(row, key))]
        for key, hashes in zip(self.unique, seen, strict=True):
            values = tuple(_value(row, k) for k in key)
            if all(_empty(v) for v in values):
                continue
            digest = hashlib.blake2b(repr(values).encode("utf-8", "replace"), digest_size=16).digest()
            if digest in hashes:
                shown = _clip(values[0] if len(values) == 1 else values)
                label = key[0] if len(key) == 1 else "+".join(key)
                found.append(Problem(f"duplicate value {shown} of unique {label!r}",
                                     _where(location, key[0]) if len(key) == 1 else f"{location}, key '{label}'"))
            else:
                hashes.add(digest)
        return found

    def _file_problems(self, count: int, newest: dt.datetime | None) -> list[Problem]:
        found = []
        if self.min_rows is not None and count < self.min_rows:
            found.append(Problem(f"{count} rows, fewer than min_rows {self.min_rows}", "file"))
        if self.max_rows is not None and count > self.max_rows:
            found.append(Problem(f"{count} rows, more than max_rows {self.max_rows}", "file"))
        if self.age_column is not None and self.within is not None:
            where = _where("file", self.age_column) if self.age_column.startswith("$") else f"column '{self.age_column}'"
            if newest is None:
                found.append(Problem(f"max_age: no date or datetime value in {self.age_column!r}", where))
            else:
                age = dt.datetime.now(dt.timezone.utc) - newest
                if age > self.within:
                    found.append(Problem(f"stale: the newest value is {newest.isoformat()}, {_age_text(age)} old, "
                                         f"older than max_age {self.config['quality']['max_age']['within']}", where))
        return found


def _age_text(age: dt.timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"
