"""Record-by-record JSON Schema validation of a page, for sources with ``records_path``.

Config key read: ``records_path`` (dotted path to the records array of each page).

Each record is checked on its own against the service's ``validate.json_schema`` (the
schema then describes one record), and every problem names the record's index:
``Problem("'temp' is a required property", location="records[3]: $")``. A page that is
not JSON, or has no array at ``records_path``, is one problem. At most
:data:`~common.problems.MAX_PROBLEMS_PER_FILE` problems are kept, plus one counting the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from module_system import Problem, capped
from modules.api_module.pagination import MISSING, dotted_get

__all__ = ["record_problems"]


def record_problems(checker: Any, path: Path, records_path: str) -> list[Problem]:
    """Problems of each record at ``records_path`` in the JSON page at ``path``."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [Problem(f"not UTF-8 text: {exc.reason}", location=f"byte offset {exc.start}")]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Problem(f"invalid JSON: {exc.msg}", location=f"line {exc.lineno}, column {exc.colno}")]
    except (ValueError, RecursionError) as exc:
        return [Problem(f"invalid JSON: {type(exc).__name__}")]
    records = dotted_get(document, records_path)
    if records is MISSING:
        return [Problem(f"records_path {records_path!r} is not in the page", location=_as_json_path(records_path))]
    if not isinstance(records, list):
        return [Problem(f"records_path {records_path!r} is not an array", location=_as_json_path(records_path))]
    return capped(problem for index, record in enumerate(records)
                  for problem in checker.check_value(record, prefix=f"records[{index}]: "))


def _as_json_path(records_path: str) -> str:
    steps = records_path.strip().lstrip("$").strip(".")
    return "$." + steps if steps else "$"
