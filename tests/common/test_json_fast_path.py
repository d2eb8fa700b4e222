"""JsonSchemaChecker's jsonschema-rs fast path against the jsonschema-only path (``fast=False``).

Valid values never run jsonschema; invalid ones get exactly jsonschema's problems; where
the engines disagree jsonschema-rs decides (see the module docstring); schemas or values
jsonschema-rs cannot take are left to jsonschema alone.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs  # noqa: F401 - a dependency: missing, these tests must fail, not skip
import pytest

from common.frozen import freeze
from common.problems import MAX_PROBLEMS_PER_FILE, Problem
from common.validators.json_checker import RS_MAX_DEPTH, JsonSchemaChecker
from tests.common.test_json_checker import answers_differing_in_threads

ROOT = Path(__file__).resolve().parents[2]
D4 = "http://json-schema.org/draft-04/schema#"
D7 = "http://json-schema.org/draft-07/schema#"

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "items"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "placed": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "uuid": {"type": "string", "format": "uuid"},
        "ip": {"type": "string", "format": "ipv4"},
        "contact": {"type": "string", "format": "email"},
        "homepage": {"type": "string", "format": "uri"},
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "items": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/item"}},
    },
    "$defs": {"item": {
        "type": "object",
        "required": ["sku", "price"],
        "properties": {"sku": {"type": "string"}, "price": {"type": "number", "minimum": 0},
                       "qty": {"type": "integer", "maximum": 1000}},
    }},
}
#: A tree of arrays: a $ref cycle, so validating can go as deep as the value.
NESTED_SCHEMA: dict[str, Any] = {
    "$defs": {"n": {"type": ["array", "integer"], "items": {"$ref": "#/$defs/n"}}},
    "$ref": "#/$defs/n",
}


class CountingChecker(JsonSchemaChecker):
    """Counts how often each engine is asked (subclass hooks, no mocks)."""

    def __init__(self, schema: Any, fast: bool = True) -> None:
        super().__init__(schema, fast=fast)
        self.jsonschema_runs = 0
        self.rs_verdicts = 0
        self.rs_error_listings = 0

    def _jsonschema_errors(self, instance: Any) -> Iterator[Any]:
        self.jsonschema_runs += 1
        return super()._jsonschema_errors(instance)

    def _rs_is_valid(self, instance: Any) -> bool | None:
        self.rs_verdicts += 1
        return super()._rs_is_valid(instance)

    def _rs_errors(self, instance: Any) -> Iterator[Any]:
        self.rs_error_listings += 1
        return super()._rs_errors(instance)


def pair(schema: Any) -> tuple[CountingChecker, JsonSchemaChecker]:
    fast, slow = CountingChecker(schema), JsonSchemaChecker(schema, fast=False)
    assert fast.fast_path and not slow.fast_path
    return fast, slow


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def order(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": 1, "placed": "2024-05-01", "at": "2024-05-01T10:00:00+02:00",
        "uuid": "123e4567-e89b-12d3-a456-426614174000", "ip": "10.0.0.1", "contact": "a@example.com",
        "homepage": "https://example.com/x", "name": "Zoë 😀", "code": "ABC-12", "labels": {"ключ": "значение"},
        "items": [{"sku": "a", "price": 1.5, "qty": 3}],
    }
    doc.update(overrides)
    return doc


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------------- valid: the fast path


def test_valid_document_lines_and_values_never_run_jsonschema(tmp_path: Path) -> None:
    fast, _ = pair(freeze(ORDER_SCHEMA))
    assert fast.check_document(write(tmp_path, "ok.json", json.dumps(order()))) == []
    rows = "\n".join(json.dumps(order(id=i)) for i in range(1, 51))
    assert fast.check_lines(write(tmp_path, "ok.jsonl", rows + "\n\n")) == []
    assert fast.check_value(order(), prefix="records[0]: ") == []
    assert (fast.rs_verdicts, fast.jsonschema_runs, fast.rs_error_listings) == (52, 0, 0)


@pytest.mark.parametrize(("schema", "value"), [
    ({"type": "integer"}, 1.0),  # 2020-12: 1.0 is an integer (both engines)
    ({"$schema": D7, "type": "integer"}, 1.0),
    ({"type": "integer", "minimum": 10}, 10**30),
    ({"type": "integer"}, 10**400),
    ({"maximum": 9007199254740993}, 9007199254740993),  # past 2**53: compared exactly
    ({"uniqueItems": True}, [1, True]),  # true is not 1
    ({"enum": [1]}, 1.0),
    ({"type": "string", "maxLength": 1}, "😀"),  # lengths count code points
    ({"type": "object", "properties": {"ключ": {"type": "string"}}}, {"ключ": "é"}),
    ({"format": "date-time"}, "2024-05-01t10:00:00z"),
    ({"format": "unknown-format"}, "anything"),
    (NESTED_SCHEMA, nested(50)),
])
def test_values_both_engines_accept_take_the_fast_path(schema: dict[str, Any], value: Any) -> None:
    fast, slow = pair(schema)
    assert fast.check_value(value) == slow.check_value(value) == []
    assert fast.jsonschema_runs == 0


# ---------------------------------------------------------------------- invalid: jsonschema's problems


INVALID_ORDERS = [
    order(id="one"),
    order(id=0, placed="2024-13-45", at="2024-05-01 10:00", uuid="not-a-uuid", ip="256.1.1.1"),
    order(name="", code="abc-12", labels={"a b": 1, "it's": 2}),
    order(items=[{"sku": "a", "price": "free"}, {"sku": 7, "price": -1, "qty": 1001}, {}], extra=True),
    order(items=[{"sku": "s", "price": "p"}] * 130),  # past the cap
    order(items=[]),
    order(id=True, items=[{"sku": "a", "price": 10**400}, {"sku": "b", "price": float("1e308")}], name="x" * 9),
    {"items": "none"},
]


@pytest.mark.parametrize("doc", INVALID_ORDERS)
def test_invalid_documents_get_exactly_the_jsonschema_problems(doc: dict[str, Any], tmp_path: Path) -> None:
    fast, slow = pair(ORDER_SCHEMA)
    path = write(tmp_path, "bad.json", json.dumps(doc))
    problems = fast.check_document(path)
    assert problems and problems == slow.check_document(path)
    assert (fast.jsonschema_runs, fast.rs_error_listings) == (1, 0)


def test_invalid_lines_and_values_get_exactly_the_jsonschema_problems(tmp_path: Path) -> None:
    fast, slow = pair(ORDER_SCHEMA)
    rows = [json.dumps(order()), "", *(json.dumps(doc) for doc in INVALID_ORDERS), "not json", json.dumps(order())]
    path = write(tmp_path, "mixed.jsonl", "\n".join(rows))
    problems = fast.check_lines(path)
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 1
    assert problems == slow.check_lines(path)
    for index, doc in enumerate(INVALID_ORDERS):
        assert fast.check_value(doc, prefix=f"records[{index}]: ") == slow.check_value(doc, prefix=f"records[{index}]: ")
    assert fast.jsonschema_runs == 2 * len(INVALID_ORDERS) and fast.rs_error_listings == 0


# ---------------------------------------------------------------------- the engines disagree


def test_format_jsonschema_does_not_check_is_reported_with_jsonschema_rs_messages(tmp_path: Path) -> None:
    # Without the optional rfc3987 package, jsonschema does not assert "uri" at all.
    fast, slow = pair(ORDER_SCHEMA)
    doc = order(homepage="not a uri", labels={})
    path = write(tmp_path, "uri.json", json.dumps(doc))
    assert slow.check_document(path) == []
    assert fast.check_document(path) == [Problem('"not a uri" is not a "uri"', "$.homepage")]
    assert (fast.jsonschema_runs, fast.rs_error_listings) == (1, 1)
    lines = write(tmp_path, "uri.jsonl", json.dumps(order()) + "\n" + json.dumps(doc) + "\n")
    assert fast.check_lines(lines) == [Problem('"not a uri" is not a "uri"', "line 2: $.homepage")]


def test_disagreement_locations_are_json_paths_in_path_order() -> None:
    schema = {"type": "object", "properties": {"links": {"type": "array", "items": {
        "type": "object", "additionalProperties": {"format": "hostname"}}}}}
    fast, slow = pair(schema)
    value = {"links": [{"ok": "example.com"}, {"it's": "-bad-", "home page": "a..b", "host": "x_y.com"}]}
    assert slow.check_value(value) == []
    assert [p.location for p in fast.check_value(value, prefix="records[3]: ")] == [
        "records[3]: $.links[1]['home page']", "records[3]: $.links[1].host", "records[3]: $.links[1]['it\\'s']"]


@pytest.mark.parametrize(("schema", "value"), [
    ({"format": "email"}, "a@@b.com"),  # jsonschema only looks for an "@"
    ({"format": "uri-reference"}, "\\\\bad"),
    ({"format": "duration"}, "1D"),
    ({"$schema": D4, "format": "date"}, "2024-13-45"),  # jsonschema checks "date" from draft 7 on
    ({"$schema": D7, "contentMediaType": "application/json"}, "not json"),
    ({"pattern": "^abc$"}, "abc\n"),  # Python's $ matches before a final newline; ECMA's does not
    ({"pattern": "^\\d+$"}, "١٢٣"),  # ECMA \d is ASCII
    ({"pattern": "^\\w+$"}, "héllo"),
])
def test_jsonschema_rs_invalid_wins_over_jsonschema_valid(schema: dict[str, Any], value: Any) -> None:
    fast, slow = pair(schema)
    assert slow.check_value(value) == []
    [problem] = fast.check_value(value)
    assert problem.location == "$" and json.dumps(value, ensure_ascii=False)[:4] in problem.message


@pytest.mark.parametrize(("schema", "value"), [
    ({"multipleOf": 0.1}, 0.3),  # exact, not 0.3 / 0.1 == 2.9999999999999996
    ({"format": "date-time"}, "2016-12-31T23:59:60Z"),  # a leap second
    ({"format": "regex"}, "(?<name>a)"),  # ECMA named group
    ({"pattern": "^\\s$"}, "\ufeff"),
    ({"patternProperties": {"^\\d+$": {"type": "integer"}}}, {"١": "x"}),
])
def test_jsonschema_rs_valid_wins_over_jsonschema_invalid(schema: dict[str, Any], value: Any) -> None:
    fast, slow = pair(schema)
    assert slow.check_value(value) != []
    assert fast.check_value(value) == []
    assert fast.jsonschema_runs == 0


def test_partial_disagreement_keeps_the_jsonschema_list() -> None:
    fast, slow = pair(ORDER_SCHEMA)
    doc = order(id="x", homepage="not a uri")
    assert fast.check_value(doc) == slow.check_value(doc) == [Problem("'x' is not of type 'integer'", "$.id")]


def test_deep_value_jsonschema_cannot_finish_gets_jsonschema_rs_messages() -> None:
    fast, slow = pair(NESTED_SCHEMA)
    value = nested(500, leaf="x")
    assert slow.check_value(value) == [Problem("document nested too deeply to validate", "$")]
    [problem] = fast.check_value(value)
    assert problem.location == "$" + "[0]" * 500
    assert problem.message == '"x" is not of type "array"' or "not of types" in problem.message


def test_errors_jsonschema_rs_cannot_list_still_give_an_invalid_verdict() -> None:
    # jsonschema gives up (RecursionError) before maxItems; jsonschema-rs cannot hand back
    # an error whose value is nested this deep.
    schema = {**NESTED_SCHEMA, "maxItems": 0}
    fast, slow = pair(schema)
    value = nested(500)
    assert slow.check_value(value) == [Problem("document nested too deeply to validate", "$")]
    [problem] = fast.check_value(value)
    assert problem.location == "$" and problem.message.startswith("does not match the schema")


# ---------------------------------------------------------------------- values jsonschema-rs cannot take


def test_non_finite_numbers_are_left_to_jsonschema(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number", "maximum": 0}}}
    fast, slow = pair(schema)
    for text in ('{"a": 1e400}', '{"b": 1e400}', '{"a": -1e400, "b": 1}'):  # json reads 1e400 as infinity
        path = write(tmp_path, "inf.json", text)
        assert fast.check_document(path) == slow.check_document(path)
        lines = write(tmp_path, "inf.jsonl", text + "\n")
        assert fast.check_lines(lines) == slow.check_lines(lines)
    assert fast.check_document(write(tmp_path, "b.json", '{"b": 1e400}')) == [
        Problem("inf is greater than the maximum of 0", "$.b")]
    for value in ({"a": float("nan")}, {"b": float("inf")}, {"a": float("-inf")}):  # API pages may hold NaN
        assert fast.check_value(value) == slow.check_value(value)
    assert fast.rs_verdicts == 0


def test_lone_surrogate_is_left_to_jsonschema(tmp_path: Path) -> None:
    # json reads "\ud800" as a lone surrogate; jsonschema-rs refuses it when it needs the text.
    fast, slow = pair({"properties": {"s": {"type": "string", "pattern": "^a"}}})
    for text in ('{"s": "\\ud800"}', '{"s": "a\\ud800"}'):
        path = write(tmp_path, "s.json", text)
        assert fast.check_document(path) == slow.check_document(path)
    assert fast.check_document(path) == []
    assert (fast.rs_verdicts, fast.jsonschema_runs) == (3, 3)


@pytest.mark.parametrize("value", [(1, 2), {"a": (1,)}, {1: "x"}, freeze({"a": 1}), {"a": {1, 2}}, b"x"])
def test_values_that_are_not_plain_json_are_left_to_jsonschema(value: Any) -> None:
    fast, slow = pair({"type": ["array", "object"], "additionalProperties": {"type": "array"}})
    assert fast.check_value(value) == slow.check_value(value)
    assert fast.rs_verdicts == 0


def test_recursive_schema_and_too_deep_value_is_left_to_jsonschema() -> None:
    fast, slow = pair(NESTED_SCHEMA)
    deep = nested(RS_MAX_DEPTH + 10)
    assert fast.check_value(deep) == slow.check_value(deep) == [
        Problem("document nested too deeply to validate", "$")]
    assert fast.rs_verdicts == 0
    assert fast.check_value(nested(RS_MAX_DEPTH - 1)) == []  # within the limit: jsonschema-rs decides
    assert fast.rs_verdicts == 1


def test_recursive_schema_and_many_shallow_brackets_still_takes_the_fast_path(tmp_path: Path) -> None:
    fast, _ = pair(NESTED_SCHEMA)
    text = json.dumps([[[1]] for _ in range(RS_MAX_DEPTH)])  # more brackets than RS_MAX_DEPTH, 3 deep
    assert fast.check_document(write(tmp_path, "wide.json", text)) == []
    assert (fast.rs_verdicts, fast.jsonschema_runs) == (1, 0)


def test_schema_without_recursion_takes_any_depth() -> None:
    fast, _ = pair({"type": "array"})
    assert fast.check_value(nested(RS_MAX_DEPTH * 3)) == []
    assert (fast.rs_verdicts, fast.jsonschema_runs) == (1, 0)


# ---------------------------------------------------------------------- schemas jsonschema-rs cannot compile


@pytest.mark.parametrize("schema", [
    {"properties": {"n": {"type": "string", "pattern": "^a{,3}$"}}},  # Python re, not ECMA-262
    {"properties": {"n": {"type": "string", "pattern": "x\\Z"}}},
    {"$schema": "http://json-schema.org/draft-03/schema#", "properties": {"n": {"type": "string"}}},
    {"$schema": "https://example.com/our-own-meta-schema", "properties": {"n": {"type": "string"}}},
])
def test_schema_jsonschema_rs_cannot_compile_keeps_jsonschema_alone(schema: dict[str, Any], tmp_path: Path) -> None:
    checker, slow = CountingChecker(schema), JsonSchemaChecker(schema, fast=False)
    assert not checker.fast_path
    for value in ({"n": "aa"}, {"n": 5}, {"n": "a{,3}"}):
        assert checker.check_value(value) == slow.check_value(value)
    path = write(tmp_path, "n.json", '{"n": 5}')
    assert checker.check_document(path) == slow.check_document(path) != []
    assert checker.rs_verdicts == 0 and checker.jsonschema_runs == 4


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server serving one schema, recording the paths asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"type": "integer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_remote_ref_is_never_fetched_by_jsonschema_rs(schema_server: tuple[str, list[str]], tmp_path: Path) -> None:
    url, asked = schema_server
    local = write(tmp_path, "item.json", json.dumps({"type": "integer"}))
    schema = {"properties": {"a": {"$ref": f"{url}/item.json"}, "b": {"$ref": local.as_uri()}, "c": {"type": "string"}}}
    checker = JsonSchemaChecker(schema)
    assert not checker.fast_path  # offline: the reference is refused, not fetched
    assert asked == []
    # jsonschema alone, as before; these values never reach the references.
    assert checker.check_value({"c": 1}) == JsonSchemaChecker(schema, fast=False).check_value({"c": 1}) == [
        Problem("1 is not of type 'string'", "$.c")]
    assert asked == []


def test_local_refs_and_ids_compile(tmp_path: Path) -> None:
    schema = {"$id": "https://example.com/root.json", "$defs": {"x": {"type": "string"}},
              "properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "https://example.com/root.json#/$defs/x"}}}
    fast, slow = pair(schema)
    assert fast.check_value({"a": 1, "b": 2}) == slow.check_value({"a": 1, "b": 2}) != []


def test_without_jsonschema_rs_installed_jsonschema_decides_alone() -> None:
    code = (
        "import sys\n"
        "sys.modules['jsonschema_rs'] = None\n"  # makes `import jsonschema_rs` fail
        "from common.validators.json_checker import JsonSchemaChecker\n"
        "c = JsonSchemaChecker({'properties': {'a': {'type': 'integer'}, 'u': {'format': 'uri'}}})\n"
        "print(c.fast_path, c.check_value({'a': 1, 'u': 'not a uri'}), c.check_value({'a': 'x'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False [] [Problem(message=\"'x' is not of type 'integer'\", location='$.a')]"


# ---------------------------------------------------------------------- threads


def test_fast_path_checker_is_shared_by_many_threads(tmp_path: Path) -> None:
    fast, slow = pair(ORDER_SCHEMA)
    files = [
        (fast.check_document, write(tmp_path, "good.json", json.dumps(order()))),
        (fast.check_document, write(tmp_path, "bad.json", json.dumps(order(id="x", placed="nope")))),
        (fast.check_document, write(tmp_path, "uri.json", json.dumps(order(homepage="no uri")))),
        (fast.check_lines, write(tmp_path, "rows.jsonl", "\n".join(
            json.dumps(order(id=i if i % 3 else "x", homepage="https://x" if i % 5 else "no uri")) for i in range(60)))),
    ]
    expected = [check(path) for check, path in files]
    assert expected[0] == [] and len(expected[1]) == 2 and len(expected[2]) == 1 and len(expected[3]) == 28
    assert expected[1] == slow.check_document(files[1][1])
    assert answers_differing_in_threads(lambda: [check(path) for check, path in files], expected) == []
