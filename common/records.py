"""The records of a data file, typed, for record destinations (``sql``).

What the columns are comes from the service's ``validate`` section
(:func:`columns_from_validate`): ``csv.columns`` with ``csv.types``, ``parquet.columns`` with
``parquet.types``, or a JSON Schema's ``properties`` and ``required``. What a file holds is
read by its suffix (:func:`read_records`):

* ``.csv``: a header row, then rows, read with the service's delimiter (UTF-8, a BOM
  allowed), streamed; cells converted by the column's type (an empty cell is NULL);
* ``.json``: an array of objects, or one object, or the array at ``records_path``
  (dotted: ``data.items``) of the document. The document is parsed whole, as its
  validation does; ``max_file_bytes`` bounds it;
* ``.jsonl`` / ``.ndjson``: one object per line (blank lines skipped), streamed (read twice
  when the columns are not all declared: once for the keys, once for the rows);
* ``.parquet`` (not compressed around): its columns, typed as declared or by their Parquet
  type, its rows read one batch at a time with pyarrow.

A value that does not convert raises :class:`~common.interfaces.destination.RecordsRefused`
naming the row (or line) and the column; a file whose suffix holds no records too.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.compression import DECOMPRESSION_ERRORS, split_compression
from common.config_model import ValidateConfig
from common.interfaces.destination import (
    Column,
    ColumnType,
    RecordsRefused,
    RecordTarget,
)
from common.problems import Problem

__all__ = ["FileRecords", "columns_from_validate", "convert_cell", "csv_header", "infer_type", "is_compressed",
           "read_records"]

_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def columns_from_validate(validate: ValidateConfig) -> tuple[Column, ...]:
    """The columns the service's ``validate`` section declares, in order (empty when none)."""
    if validate.csv is not None and validate.csv.columns:
        types = validate.csv.types
        return tuple(Column(name, types.get(name, "str")) for name in validate.csv.columns)
    if validate.parquet is not None and validate.parquet.columns:
        ptypes = validate.parquet.types
        return tuple(Column(name, ptypes.get(name, "str")) for name in validate.parquet.columns)
    schema = validate.json_schema
    if schema is not None and isinstance(schema.get("properties"), Mapping):
        required = set(schema.get("required") or ())
        return tuple(Column(name, _json_type(sub), name in required)
                     for name, sub in schema["properties"].items())
    if validate.csv is not None and validate.csv.types:
        return tuple(Column(name, kind) for name, kind in validate.csv.types.items())
    return ()


def _json_type(schema: Any) -> ColumnType:
    if not isinstance(schema, Mapping):
        return "json"
    kinds = schema.get("type")
    if isinstance(kinds, (list, tuple)):
        kinds = [k for k in kinds if k != "null"]
        kinds = kinds[0] if len(kinds) == 1 else None
    if kinds == "integer":
        return "int"
    if kinds == "number":
        return "float"
    if kinds == "boolean":
        return "bool"
    if kinds == "string":
        return {"date": "date", "date-time": "datetime"}.get(schema.get("format", ""), "str")  # type: ignore[return-value]
    return "json"


@dataclass
class FileRecords:
    """A file's records: its column names (in the file's order) and typed rows in that order."""

    columns: list[str]
    types: dict[str, ColumnType]
    """Each column's type: declared, else inferred (JSON) or ``str`` (CSV)."""
    rows: Iterator[tuple[Any, ...]]
    kind: str
    """``csv``, ``json`` or ``parquet``."""


def read_records(path: Path, name: str, target: RecordTarget, records_path: str | None = None) -> FileRecords:
    """The records of the file at ``path`` (named ``name`` at its source), typed by ``target.columns``.
    A ``.gz``, ``.bz2`` or ``.xz`` file is read through its decompressor, by the suffix before."""
    inner, decompress = split_compression(name)
    opener: Callable[..., Any] = decompress or open
    lowered = inner.lower()
    suffix = lowered.rsplit(".", 1)[-1] if "." in lowered else ""
    declared = {c.name: c.type for c in target.columns}
    try:
        if suffix == "csv":
            return _csv_records(path, target.csv_delimiter, declared, opener)
        if suffix == "json":
            return _json_records(_json_document_records(path, records_path, opener), declared, "record")
        if suffix in ("jsonl", "ndjson"):
            return _json_lines_records(path, declared, opener)
        if suffix == "parquet" and decompress is None:
            return _parquet_records(path, declared)
    except DECOMPRESSION_ERRORS as exc:
        raise RecordsRefused(f"cannot decompress {name}: {type(exc).__name__}: {exc}") from None
    raise RecordsRefused(f"no records in .{suffix or name} files: a record destination loads .csv, .json, "
                         ".jsonl, .ndjson (also compressed: .gz, .bz2, .xz) and .parquet files")


#: What reading a CSV file's rows may raise: bad bytes, bad quoting, a corrupt compressed stream.
_CSV_READ_ERRORS: tuple[type[BaseException], ...] = (UnicodeDecodeError, csv.Error, *DECOMPRESSION_ERRORS)


def is_compressed(name: str) -> bool:
    return split_compression(name)[1] is not None


# ----------------------------------------------------------------------------- CSV


def convert_cell(kind: ColumnType, cell: str) -> Any:
    """A CSV cell as the Python value of its column type (ValueError when it is not one)."""
    if kind == "str":
        return cell
    if kind == "int":
        return int(cell)
    if kind == "float":
        return float(cell)
    if kind == "date":
        return dt.date.fromisoformat(cell)
    if kind == "datetime":
        return dt.datetime.fromisoformat(cell[:-1] + "+00:00" if cell[-1:] in "Zz" and cell else cell)
    if kind == "bool":
        low = cell.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(cell)
    return json.loads(cell)


def _csv_records(path: Path, delimiter: str, declared: Mapping[str, ColumnType],
                 opener: Callable[..., Any] = open) -> FileRecords:
    header = csv_header(path, delimiter, opener)
    types = {h: declared.get(h, "str") for h in header}
    plan: list[tuple[int, str, Callable[[str], Any] | None]] = [
        (i, h, None if types[h] == "str" else _converter(types[h])) for i, h in enumerate(header)]
    width = len(header)

    def rows() -> Iterator[tuple[Any, ...]]:
        line = 1
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                next(reader, None)
                for row in reader:
                    line += 1
                    if not row:
                        continue
                    if len(row) != width:
                        raise RecordsRefused(f"row {line} has {len(row)} fields, the header {width}",
                                             (Problem(f"{len(row)} fields, the header has {width}", f"row {line}"),))
                    out: list[Any] = []
                    for i, column, convert in plan:
                        cell = row[i]
                        if cell == "":
                            out.append(None)
                        elif convert is None:
                            out.append(cell)
                        else:
                            try:
                                out.append(convert(cell))
                            except (ValueError, OverflowError):
                                raise _bad_value(cell, types[column], f"row {line}, column '{column}'") from None
                    yield tuple(out)
            except _CSV_READ_ERRORS as exc:
                raise RecordsRefused(f"unreadable CSV at row {line + 1}: {exc}",
                                     (Problem(str(exc), f"row {line + 1}"),)) from None

    return FileRecords(header, types, rows(), "csv")


def csv_header(path: Path, delimiter: str, opener: Callable[..., Any] = open) -> list[str]:
    """The column names of a CSV file (an empty file has none)."""
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RecordsRefused(f"unreadable CSV header: {exc}", (Problem(str(exc), "row 1"),)) from None
    if len(set(header)) != len(header) or any(not h for h in header):
        raise RecordsRefused("the CSV header has an empty or repeated column name", (Problem("bad header", "row 1"),))
    return header


def _converter(kind: ColumnType) -> Callable[[str], Any]:
    if kind == "int":
        return int
    if kind == "float":
        return float
    return lambda cell: convert_cell(kind, cell)


# ----------------------------------------------------------------------------- JSON


def _json_document_records(path: Path, records_path: str | None, opener: Callable[..., Any] = open) -> list[Any]:
    try:
        with opener(path, "rb") as fh:
            document = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordsRefused(f"not JSON: {exc}") from None
    where = "$"
    for part in (records_path or "").split(".") if records_path else ():
        if not isinstance(document, Mapping) or part not in document:
            raise RecordsRefused(f"records_path '{records_path}' does not lead to records: no '{part}' at {where}",
                                 (Problem(f"no '{part}'", where),))
        document = document[part]
        where += f".{part}"
    if isinstance(document, Mapping):
        return [document]
    if isinstance(document, list):
        return document
    raise RecordsRefused(f"no records at {where}: an array of objects or one object was expected",
                         (Problem("not an array or object", where),))


def _json_lines(path: Path, opener: Callable[..., Any] = open) -> Iterator[tuple[int, Any]]:
    try:
        yield from _json_lines_raw(path, opener)
    except DECOMPRESSION_ERRORS as exc:
        raise RecordsRefused(f"unreadable JSON Lines: {type(exc).__name__}: {exc}") from None


def _json_lines_raw(path: Path, opener: Callable[..., Any]) -> Iterator[tuple[int, Any]]:
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise RecordsRefused(f"line {number} is not JSON: {exc}", (Problem("not JSON", f"line {number}"),)) from None


def _json_lines_records(path: Path, declared: Mapping[str, ColumnType], opener: Callable[..., Any] = open) -> FileRecords:
    columns, types = _json_columns((item for _, item in _json_lines(path, opener)), declared, "line")
    return FileRecords(columns, types, _json_rows(_json_lines(path, opener), columns, types, "line"), "json")


def _json_records(items: list[Any], declared: Mapping[str, ColumnType], label: str) -> FileRecords:
    columns, types = _json_columns(items, declared, label)
    return FileRecords(columns, types, _json_rows(enumerate(items, start=1), columns, types, label), "json")


def _json_columns(items: Iterable[Any], declared: Mapping[str, ColumnType],
                  label: str) -> tuple[list[str], dict[str, ColumnType]]:
    """Every key of the records, declared columns first; the type of the others inferred from
    their first non-null value."""
    columns = list(declared)
    types: dict[str, ColumnType] = dict(declared)
    for number, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            raise RecordsRefused(f"{label} {number} is not an object", (Problem("not an object", f"{label} {number}"),))
        for key, value in item.items():
            if key not in types:
                if value is None:
                    continue
                types[key] = infer_type(value)
                columns.append(key)
    for key in declared:  # a declared column no record has still exists
        types.setdefault(key, declared[key])
    return columns, types


def infer_type(value: Any) -> ColumnType:
    """The column type of an undeclared JSON value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _json_rows(items: Iterable[tuple[int, Any]], columns: Sequence[str], types: Mapping[str, ColumnType],
               label: str) -> Iterator[tuple[Any, ...]]:
    for number, item in items:
        if not isinstance(item, Mapping):
            raise RecordsRefused(f"{label} {number} is not an object", (Problem("not an object", f"{label} {number}"),))
        out: list[Any] = []
        for column in columns:
            value = item.get(column)
            if value is None:
                out.append(None)
                continue
            try:
                out.append(_json_value(types[column], value))
            except (ValueError, TypeError, OverflowError):
                raise _bad_value(value, types[column], f"{label} {number}: $.{column}") from None
        yield tuple(out)


def _json_value(kind: ColumnType, value: Any) -> Any:
    if kind == "json":
        return value
    if kind == "str":
        return value if isinstance(value, str) else json.dumps(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(value)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(value)
        return float(value)
    if not isinstance(value, str):
        raise TypeError(value)
    return convert_cell(kind, value)


# ----------------------------------------------------------------------------- Parquet


def _parquet_records(path: Path, declared: Mapping[str, ColumnType]) -> FileRecords:
    """The rows of a Parquet file, one row batch in memory at a time; an undeclared column's
    type comes from its Parquet type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RecordsRefused(f"not a valid Parquet file: {type(exc).__name__}: {exc}") from None
    columns = list(schema.names)
    types = {c: declared.get(c) or _arrow_column_type(schema.field(c).type) for c in columns}

    def rows() -> Iterator[tuple[Any, ...]]:
        from common.validators.parquet_checker import parquet_rows

        try:
            for number, item in enumerate(parquet_rows(path), start=1):
                yield tuple(_parquet_value(types[c], item[c], f"row {number}: $.{c}") for c in columns)
        except (pa.ArrowException, OSError) as exc:
            raise RecordsRefused(f"unreadable Parquet file: {type(exc).__name__}: {exc}") from None

    return FileRecords(columns, types, rows(), "parquet")


def _arrow_column_type(arrow_type: Any) -> ColumnType:
    import pyarrow.types as t

    if t.is_boolean(arrow_type):
        return "bool"
    if t.is_integer(arrow_type):
        return "int"
    if t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return "float"
    if t.is_date(arrow_type):
        return "date"
    if t.is_timestamp(arrow_type):
        return "datetime"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return "str"
    return "json"


def _parquet_value(kind: ColumnType, value: Any, location: str) -> Any:
    from common.validators.parquet_checker import json_ready

    if value is None:
        return None
    if kind == "datetime" and isinstance(value, dt.date):
        return value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
    if kind == "date" and isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return _json_value(kind, json_ready(value))
    except (ValueError, TypeError, OverflowError):
        raise _bad_value(value, kind, location) from None


def _bad_value(value: Any, kind: ColumnType, location: str) -> RecordsRefused:
    shown = str(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    message = f"{shown!r} is not a {kind}"
    return RecordsRefused(f"{location}: {message}", (Problem(message, location),))
