"""JsonSchemaChecker: JSON paths, invalid JSON, JSON lines, the problem cap, formats, threads."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.frozen import freeze
from common.problems import MAX_PROBLEMS_PER_FILE, Problem
from common.validators.json_checker import JsonSchemaChecker

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "integer"},
        "placed": {"type": "string", "format": "date"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "price"],
                "properties": {"sku": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
            },
        },
    },
}


@pytest.fixture(scope="module")
def checker() -> JsonSchemaChecker:
    return JsonSchemaChecker(freeze(ORDER_SCHEMA))


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def order(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": 1, "placed": "2024-05-01", "items": [{"sku": "a", "price": 1.5}]}
    doc.update(overrides)
    return doc


# ---------------------------------------------------------------------- documents


def test_valid_document_has_no_problems(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    assert checker.check_document(write(tmp_path, "ok.json", json.dumps(order()))) == []


def test_locations_are_json_paths_in_path_order(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    items = [{"sku": "a", "price": 1}] * 12
    items[3] = {"sku": "d", "price": "free"}
    items[10] = {"sku": 7, "price": -1}
    doc = order(id="one", items=items)
    problems = checker.check_document(write(tmp_path, "bad.json", json.dumps(doc)))
    assert [p.location for p in problems] == ["$.id", "$.items[3].price", "$.items[10].price", "$.items[10].sku"]
    assert problems[1].message == "'free' is not of type 'number'"
    assert problems[2].message == "-1 is less than the minimum of 0"


def test_missing_required_key_is_located_at_its_parent(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    problems = checker.check_document(write(tmp_path, "m.json", json.dumps({"items": [{"sku": "x"}]})))
    assert problems == [
        Problem("'id' is a required property", "$"),
        Problem("'price' is a required property", "$.items[0]"),
    ]


def test_invalid_json_gives_line_and_column(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", '{\n  "id": 1,\n  "items": [1,, 2]\n}\n')
    [problem] = checker.check_document(path)
    assert problem.location == "line 3, column 15"
    assert problem.message.startswith("invalid JSON: ")


def test_nan_is_not_json(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    [problem] = checker.check_document(write(tmp_path, "nan.json", '{"id": NaN, "items": []}'))
    assert "NaN" in problem.message


def test_undecodable_utf8_is_one_problem(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    [problem] = checker.check_document(write(tmp_path, "latin.json", b'{"id": 1, "x": "caf\xe9", "items": []}'))
    assert problem.message.startswith("not UTF-8 text")
    assert problem.location == "byte offset 19"


def test_utf8_bom_is_accepted(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    assert checker.check_document(write(tmp_path, "bom.json", b"\xef\xbb\xbf" + json.dumps(order()).encode())) == []


def test_format_is_checked(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    [problem] = checker.check_document(write(tmp_path, "date.json", json.dumps(order(placed="2024-13-45"))))
    assert problem.location == "$.placed"
    assert "date" in problem.message


def test_schema_draft_is_taken_from_dollar_schema(tmp_path: Path) -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "integer"}]}
    checker = JsonSchemaChecker(draft7)  # draft 7 tuple-form items; 2020-12 would reject the schema shape
    [problem] = checker.check_document(write(tmp_path, "t.json", '["x", "y"]'))
    assert problem.location == "$[0]"


# ---------------------------------------------------------------------- JSON lines


def test_lines_locate_line_and_path_and_skip_blank_lines(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    rows = [json.dumps(order()), "", json.dumps(order(id="x")), "   ", json.dumps(order(items=[{"sku": 1, "price": 2}]))]
    problems = checker.check_lines(write(tmp_path, "o.jsonl", "\n".join(rows) + "\n"))
    assert [p.location for p in problems] == ["line 3: $.id", "line 5: $.items[0].sku"]


def test_invalid_json_on_a_line_is_that_lines_problem(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    rows = [json.dumps(order()), '{"id": 2, "items": [', json.dumps(order()), "not json"]
    problems = checker.check_lines(write(tmp_path, "o.ndjson", "\r\n".join(rows)))
    assert [p.location for p in problems] == ["line 2, column 21", "line 4, column 1"]
    assert all(p.message.startswith("invalid JSON: ") for p in problems)


def test_undecodable_line_is_reported_and_others_still_checked(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    content = json.dumps(order()).encode() + b"\n" + b'{"id": "\xff"}\n' + json.dumps(order(id="z")).encode()
    problems = checker.check_lines(write(tmp_path, "u.jsonl", content))
    assert [p.location for p in problems] == ["line 2, byte offset 8", "line 3: $.id"]


def test_empty_line_file_is_valid(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    assert checker.check_lines(write(tmp_path, "e.jsonl", "\n\n")) == []


# ---------------------------------------------------------------------- the cap


def test_lines_capped_with_a_count_of_the_rest(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    bad = json.dumps(order(id="x"))
    problems = checker.check_lines(write(tmp_path, "many.jsonl", "\n".join([bad] * 250)))
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 1
    assert problems[0].location == "line 1: $.id"
    assert problems[MAX_PROBLEMS_PER_FILE - 1].location == f"line {MAX_PROBLEMS_PER_FILE}: $.id"
    assert problems[-1].location is None
    assert problems[-1].message.startswith("150 more problems")


def test_document_capped_keeping_the_first_paths(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    doc = order(items=[{"sku": "s", "price": "p"}] * 130)
    problems = checker.check_document(write(tmp_path, "many.json", json.dumps(doc)))
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 1
    assert [p.location for p in problems[:3]] == ["$.items[0].price", "$.items[1].price", "$.items[2].price"]
    assert problems[MAX_PROBLEMS_PER_FILE - 1].location == f"$.items[{MAX_PROBLEMS_PER_FILE - 1}].price"
    assert problems[-1].message.startswith("30 more problems")


def test_exactly_the_cap_has_no_summary(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    doc = order(items=[{"sku": "s", "price": "p"}] * MAX_PROBLEMS_PER_FILE)
    problems = checker.check_document(write(tmp_path, "cap.json", json.dumps(doc)))
    assert len(problems) == MAX_PROBLEMS_PER_FILE
    assert all(p.location is not None for p in problems)


def test_long_messages_are_one_short_line(tmp_path: Path) -> None:
    checker = JsonSchemaChecker({"type": "string"})
    [problem] = checker.check_document(write(tmp_path, "big.json", json.dumps({"k\nx": "v" * 5000})))
    assert "\n" not in problem.message and len(problem.message) <= 500


# ---------------------------------------------------------------------- threads


def test_one_checker_is_shared_by_many_threads(checker: JsonSchemaChecker, tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", json.dumps(order()))
    bad = write(tmp_path, "bad.json", json.dumps(order(id="x", placed="nope")))
    lines = write(tmp_path, "rows.jsonl", "\n".join(json.dumps(order(id=i if i % 3 else "x")) for i in range(60)))
    def check_all() -> Any:
        return checker.check_document(good), checker.check_document(bad), checker.check_lines(lines)

    expected = check_all()
    assert expected[0] == [] and len(expected[1]) == 2 and len(expected[2]) == 20
    assert answers_differing_in_threads(check_all, expected) == []


def answers_differing_in_threads(call: Callable[[], Any], expected: Any, threads: int = 8,
                                 rounds: int = 25) -> list[Any]:
    """``call()`` ``rounds`` times in each of ``threads`` threads started together; the answers
    that differ from ``expected``."""
    mismatches: list[Any] = []
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(rounds):
            got = call()
            if got != expected:
                mismatches.append(got)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return mismatches
