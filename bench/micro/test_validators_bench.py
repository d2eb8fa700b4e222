"""Micro-benchmarks of the per-file work: CSV and JSON Schema checks, hashing sink.

    pytest bench/micro --benchmark-only

Not part of the test suite (``testpaths = ["tests"]``). Each benchmark stores its
throughput in ``extra_info`` (MB/s or documents/s, from the mean time), shown with
``--benchmark-json`` or ``--benchmark-verbose``; the README quotes them. Baselines
(the stdlib ``csv`` reader, ``json.loads``) say how much of a check is parsing alone.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from bench.datasets import (
    CSV_COLUMNS,
    CSV_TYPES,
    ORDER_SCHEMA,
    _csv_rows,
    _order_document,
)
from common.config_model import CsvRules
from common.file_sink import FileSink
from common.validators.csv_checker import CsvChecker
from common.validators.json_checker import JsonSchemaChecker

CSV_BYTES = 2_000_000
JSON_BYTES = 20_000


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("csv") / "rows.csv"
    path.write_text("".join(_csv_rows(random.Random(1), CSV_BYTES)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def json_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("json") / "order.json"
    path.write_text(_order_document(random.Random(1), 7, JSON_BYTES), encoding="utf-8")
    return path


def _mb_s(benchmark: Any, size: int) -> None:
    benchmark.extra_info["MB_per_s"] = round(size / 1e6 / benchmark.stats.stats.mean, 2)


def _docs_s(benchmark: Any) -> None:
    benchmark.extra_info["documents_per_s"] = round(1 / benchmark.stats.stats.mean, 1)


@pytest.fixture(scope="module")
def csv_file_bad_last_row(tmp_path_factory: pytest.TempPathFactory, csv_file: Path) -> Path:
    path = tmp_path_factory.mktemp("csv") / "bad_last_row.csv"
    path.write_bytes(csv_file.read_bytes() + b"1,2024-02-30,2024-01-01T00:00:00Z,1.5,x,true\n")
    return path


def test_csv_checker_typed(benchmark: Any, csv_file: Path) -> None:
    """The A/B datasets' rules: header and six typed columns (a valid file: the fast accept path)."""
    checker = CsvChecker(CsvRules(CSV_COLUMNS, CSV_TYPES, ",", True))
    assert benchmark(checker.check, csv_file) == []
    _mb_s(benchmark, csv_file.stat().st_size)


def test_csv_checker_typed_exact(benchmark: Any, csv_file: Path) -> None:
    """The same check on the exact path alone (``csv`` module, row by row): the reference."""
    checker = CsvChecker(CsvRules(CSV_COLUMNS, CSV_TYPES, ",", True))
    assert benchmark(checker.check_exact, csv_file) == []
    _mb_s(benchmark, csv_file.stat().st_size)


def test_csv_fast_accept_path(benchmark: Any, csv_file: Path) -> None:
    """The fast accept path alone (one RE2 pass over the bytes, google-re2), as ``check`` runs it."""
    checker = CsvChecker(CsvRules(CSV_COLUMNS, CSV_TYPES, ",", True))
    assert benchmark(checker._fast_accepts, csv_file) is True
    _mb_s(benchmark, csv_file.stat().st_size)


def test_csv_checker_typed_invalid_last_row(benchmark: Any, csv_file_bad_last_row: Path) -> None:
    """The worst case: a file invalid only in its last row costs the fast attempt plus the exact path."""
    checker = CsvChecker(CsvRules(CSV_COLUMNS, CSV_TYPES, ",", True))
    assert len(benchmark(checker.check, csv_file_bad_last_row)) == 1
    _mb_s(benchmark, csv_file_bad_last_row.stat().st_size)


def test_csv_checker_header_only(benchmark: Any, csv_file: Path) -> None:
    """Header and field counts, no types (the fast accept path on a valid file)."""
    checker = CsvChecker(CsvRules(CSV_COLUMNS, {}, ",", True))
    assert benchmark(checker.check, csv_file) == []
    _mb_s(benchmark, csv_file.stat().st_size)


def test_csv_checker_header_only_exact(benchmark: Any, csv_file: Path) -> None:
    """Header and field counts on the exact path: the cost of reading rows through the checker."""
    checker = CsvChecker(CsvRules(CSV_COLUMNS, {}, ",", True))
    assert benchmark(checker.check_exact, csv_file) == []
    _mb_s(benchmark, csv_file.stat().st_size)


def test_csv_stdlib_reader_baseline(benchmark: Any, csv_file: Path) -> None:
    """``csv.reader`` over the same file, doing nothing with the rows: the parse floor."""
    def read() -> int:
        with open(csv_file, encoding="utf-8-sig", newline="") as fh:
            return sum(1 for _ in csv.reader(fh))

    assert benchmark(read) > 1000
    _mb_s(benchmark, csv_file.stat().st_size)


def test_json_schema_checker_document(benchmark: Any, json_file: Path) -> None:
    """Dataset C: one ~20 KB order document, read, parsed and checked against its schema."""
    checker = JsonSchemaChecker(ORDER_SCHEMA)
    assert benchmark(checker.check_document, json_file) == []
    _docs_s(benchmark)
    _mb_s(benchmark, json_file.stat().st_size)


def test_json_schema_validation_only(benchmark: Any, json_file: Path) -> None:
    """The schema check alone, on an already parsed document."""
    checker = JsonSchemaChecker(ORDER_SCHEMA)
    document = json.loads(json_file.read_text())
    assert benchmark(checker.check_value, document) == []
    _docs_s(benchmark)


def test_json_loads_baseline(benchmark: Any, json_file: Path) -> None:
    """Reading and parsing the document with ``json.loads``: the parse floor."""
    benchmark(lambda: json.loads(json_file.read_bytes()))
    _docs_s(benchmark)


def test_file_sink_write_and_hash(benchmark: Any, tmp_path: Path) -> None:
    """What every module does per fetched byte: write to the workdir and SHA-256 it (1 MiB chunks)."""
    chunk, chunks = random.Random(2).randbytes(1 << 20), 32

    def write() -> int:
        with FileSink(tmp_path, "f.bin", "bench://f", {}) as sink:
            for _ in range(chunks):
                sink.write(chunk)
            return sink.finish().size

    assert benchmark(write) == chunks << 20
    _mb_s(benchmark, chunks << 20)


def test_json_schema_checker_document_fast_path(benchmark: Any, json_file: Path) -> None:
    """Dataset C's document through the jsonschema-rs fast path (valid: jsonschema never runs)."""
    checker = JsonSchemaChecker(ORDER_SCHEMA)
    assert checker.fast_path, "jsonschema-rs is not installed or did not compile ORDER_SCHEMA"
    assert benchmark(checker.check_document, json_file) == []
    _docs_s(benchmark)
    _mb_s(benchmark, json_file.stat().st_size)


def test_json_schema_checker_document_jsonschema_only(benchmark: Any, json_file: Path) -> None:
    """The same document with ``fast=False``: jsonschema alone, the behaviour before the fast path."""
    checker = JsonSchemaChecker(ORDER_SCHEMA, fast=False)
    assert benchmark.pedantic(checker.check_document, (json_file,), rounds=20, iterations=1) == []
    _docs_s(benchmark)
    _mb_s(benchmark, json_file.stat().st_size)
