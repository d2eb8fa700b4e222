"""The ``.xlsx`` checker (``validate.xlsx``): one sheet read row by row like a CSV file, with
openpyxl in read-only mode (the sheet's XML is streamed, never loaded whole).

Rules (:class:`~common.config_model.TableRules`): ``sheet`` (default: the first sheet),
``columns`` (the header row, in order), ``types`` (the ``validate.csv.types`` vocabulary),
``allow_empty``. The first row is the header; a row whose cells are all empty is skipped,
as a blank CSV line is. A cell passes its column's type when Excel already stores it as
such (a number for ``int``/``float``: an ``int`` must be whole; a date or date-time for
``date``/``datetime``: a ``date`` cell at midnight; a boolean for ``bool``) or when it is
text the CSV test of that type accepts (:mod:`common.validators.csv_checker`). A value in
a column past the header is a problem. Locations are Excel's row numbers:
``row 3, column 'amount'``.

An ``.xlsx`` file is a zip: one whose parts declare more uncompressed bytes than
``validate.max_expanded_mb`` is refused unread (openpyxl keeps the shared strings in memory).
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from common.config_model import CsvType, TableRules
from common.problems import Problem, capped
from common.validators.csv_checker import CELL_TESTS, header_problems

__all__ = ["XlsxChecker", "cell_passes", "xlsx_rows"]


def cell_passes(kind: CsvType, value: Any) -> bool:
    """Whether the non-empty cell ``value`` (as openpyxl reads it) is a valid ``kind``."""
    if isinstance(value, str):
        return bool(CELL_TESTS[kind](value.strip()) if value.strip() else False)
    if kind == "str":
        return True
    if isinstance(value, bool):
        return kind == "bool"
    if isinstance(value, int):
        return kind in ("int", "float")
    if isinstance(value, float):
        return kind == "float" or (kind == "int" and value.is_integer())
    if isinstance(value, dt.datetime):
        return kind == "datetime" or (kind == "date" and value.time() == dt.time())
    if isinstance(value, dt.date):
        return kind in ("date", "datetime")
    return False


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _open_sheet(path: Path, sheet: str | None) -> tuple[Any, Any]:
    """(workbook, worksheet), read-only; raises KeyError naming a missing sheet."""
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is None:
            return book, book.worksheets[0]
        if sheet not in book.sheetnames:
            raise KeyError(f"no sheet named {sheet!r} (sheets: {', '.join(map(repr, book.sheetnames))})")
        return book, book[sheet]
    except BaseException:
        book.close()
        raise


def xlsx_rows(path: Path, sheet: str | None = None) -> Generator[tuple[int, tuple[Any, ...]], None, None]:
    """(Excel row number, cell values) of each row of the sheet, blank rows included, streamed."""
    book, ws = _open_sheet(path, sheet)
    try:
        yield from enumerate(ws.iter_rows(values_only=True), start=1)
    finally:
        book.close()


class XlsxChecker:
    """Checks ``.xlsx`` files against one service's ``validate.xlsx``. Thread-safe: no state per call."""

    def __init__(self, rules: TableRules, max_expanded_bytes: int = 1024 << 20) -> None:
        self.rules = rules
        self.max_expanded_bytes = max_expanded_bytes

    def check(self, path: Path) -> list[Problem]:
        """Problems of the file at ``path``; empty when it is valid."""
        try:
            with zipfile.ZipFile(path) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError) as exc:
            return [Problem(f"not a valid xlsx file: {type(exc).__name__}: {exc}")]
        if declared > self.max_expanded_bytes:
            return [Problem(f"not checked: its parts declare {declared >> 20} MiB uncompressed, past "
                            f"validate.max_expanded_mb ({self.max_expanded_bytes >> 20} MiB); "
                            "refused as a possible compression bomb")]
        try:
            return capped(self._problems(path))
        except KeyError as exc:
            return [Problem(str(exc.args[0]) if exc.args else "sheet not found", "sheet")]
        except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds on a broken workbook
            return [Problem(f"not a valid xlsx file: {type(exc).__name__}: {str(exc)[:200]}")]

    def _problems(self, path: Path) -> Iterator[Problem]:
        rules = self.rules
        rows = xlsx_rows(path, rules.sheet)
        try:
            header: list[str] = []
            plan: list[tuple[int, str, CsvType]] = []
            for number, row in rows:
                cells = list(row)
                while cells and _empty(cells[-1]):
                    cells.pop()
                if number == 1:
                    if not cells:
                        yield Problem("header row is empty", "row 1")
                        return
                    header = ["" if c is None else str(c).strip() for c in cells]
                    yield from header_problems(header, rules.columns, rules.types)
                    plan = [(i, name, rules.types[name]) for i, name in enumerate(header) if name in rules.types]
                    continue
                if not cells:
                    continue  # a blank row
                if len(cells) > len(header):
                    yield Problem(f"expected {len(header)} fields, found {len(cells)}", f"row {number}")
                    continue
                for index, name, kind in plan:
                    value = cells[index] if index < len(cells) else None
                    if _empty(value):
                        if not rules.allow_empty:
                            yield Problem(f"empty {kind} value", f"row {number}, column '{name}'")
                    elif not cell_passes(kind, value):
                        yield Problem(f"not a valid {kind}: {_clip(value)}", f"row {number}, column '{name}'")
            if not header:
                yield Problem("sheet is empty: no header row", "row 1")
        finally:
            rows.close()


def _clip(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")
