"""The ``.parquet`` checker (``validate.parquet``): schema, types and rows, read with pyarrow
one row batch at a time (:meth:`pyarrow.parquet.ParquetFile.iter_batches`), never the whole table.

Rules (:class:`~common.config_model.TableRules`): ``columns`` (the required column names, in
order), ``types`` (the ``validate.csv.types`` vocabulary), ``allow_empty`` (a null passes a
typed column), ``json_schema`` (each row, as an object, against a JSON Schema).

A typed column is checked by its Parquet (Arrow) type first:

========== =========================================================================
int        any integer type
float      any integer, floating point or decimal type
date       ``date32``/``date64``
datetime   a timestamp or a date
bool       ``bool``
str        any type
========== =========================================================================

A column of another type is one problem, located ``column 'name'``. A *string* column
typed otherwise is checked value by value with the CSV cell tests
(:mod:`common.validators.csv_checker`): ``"12"`` is a valid ``int``. Rows are numbered from
1 (the first record; Parquet has no header row): ``row 3, column 'amount'``; a row schema
problem reads ``row 3: $.amount``. A file whose row groups declare more uncompressed bytes
than ``validate.max_expanded_mb`` is refused unread.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from common.config_model import CsvType, TableRules
from common.problems import Problem, capped
from common.validators.csv_checker import CELL_TESTS, header_problems

__all__ = ["BATCH_ROWS", "ParquetChecker", "parquet_rows"]

#: Rows per batch read from the file.
BATCH_ROWS = 4096


def _compatible(kind: CsvType, arrow_type: Any) -> bool:
    import pyarrow.types as t

    if kind == "str":
        return True
    if kind == "int":
        return bool(t.is_integer(arrow_type))
    if kind == "float":
        return bool(t.is_integer(arrow_type) or t.is_floating(arrow_type) or t.is_decimal(arrow_type))
    if kind == "date":
        return bool(t.is_date(arrow_type))
    if kind == "datetime":
        return bool(t.is_timestamp(arrow_type) or t.is_date(arrow_type))
    return bool(t.is_boolean(arrow_type))


def _is_text(arrow_type: Any) -> bool:
    import pyarrow.types as t

    if t.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(t.is_string(arrow_type) or t.is_large_string(arrow_type))


def json_ready(value: Any) -> Any:
    """A Parquet value as JSON data: dates and times as ISO strings, decimals as floats,
    bytes as text (UTF-8, undecodable bytes replaced); lists and mappings converted deeply."""
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def parquet_rows(path: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of the Parquet file at ``path`` as dicts, one batch in memory at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as reader:
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield from batch.to_pylist()


class ParquetChecker:
    """Checks ``.parquet`` files against one service's ``validate.parquet``. Thread-safe."""

    def __init__(self, rules: TableRules, max_expanded_bytes: int = 1024 << 20) -> None:
        self.rules = rules
        self.max_expanded_bytes = max_expanded_bytes
        self._rows = None
        if rules.json_schema is not None:
            from common.validators.json_checker import JsonSchemaChecker

            self._rows = JsonSchemaChecker(rules.json_schema)

    def check(self, path: Path) -> list[Problem]:
        """Problems of the file at ``path``; empty when it is valid."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            reader = pq.ParquetFile(path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            return [Problem(f"not a valid Parquet file: {_one_line(exc)}")]
        with reader:
            declared = sum(reader.metadata.row_group(i).total_byte_size for i in range(reader.num_row_groups))
            if declared > self.max_expanded_bytes:
                return [Problem(f"not checked: its row groups declare {declared >> 20} MiB uncompressed, past "
                                f"validate.max_expanded_mb ({self.max_expanded_bytes >> 20} MiB)")]
            try:
                return capped(self._problems(reader))
            except (pa.ArrowException, OSError, ValueError) as exc:
                return [Problem(f"not a valid Parquet file: {_one_line(exc)}")]

    def _problems(self, reader: Any) -> Iterator[Problem]:
        schema = reader.schema_arrow
        header = list(schema.names)
        rules = self.rules
        yield from header_problems(header, rules.columns, rules.types, where="schema")
        value_checked: list[tuple[str, CsvType, bool]] = []  # (column, type, test the text)
        for name, kind in rules.types.items():
            if name not in header:
                continue
            arrow_type = schema.field(name).type
            if _is_text(arrow_type) and kind != "str":
                value_checked.append((name, kind, True))
            elif not _compatible(kind, arrow_type):
                yield Problem(f"column type {arrow_type} is not {kind}", f"column '{name}'")
            elif not rules.allow_empty:
                value_checked.append((name, kind, False))
        if not value_checked and self._rows is None:
            return
        read = None if self._rows is not None else [name for name, _, _ in value_checked]
        row_no = 0
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=read):
            cells = {name: batch.column(name).to_pylist() for name, _, _ in value_checked}
            rows = batch.to_pylist() if self._rows is not None else None
            for offset in range(batch.num_rows):
                row_no += 1
                for name, kind, textual in value_checked:
                    value = cells[name][offset]
                    if value is None or value == "":
                        if not rules.allow_empty:
                            yield Problem(f"empty {kind} value", f"row {row_no}, column '{name}'")
                    elif textual and not CELL_TESTS[kind](value):
                        yield Problem(f"not a valid {kind}: {_clip(value)}", f"row {row_no}, column '{name}'")
                if rows is not None and self._rows is not None:
                    yield from self._rows.check_value(json_ready(rows[offset]), prefix=f"row {row_no}: ")


def _clip(cell: str, limit: int = 40) -> str:
    return repr(cell if len(cell) <= limit else cell[:limit] + "...")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]
