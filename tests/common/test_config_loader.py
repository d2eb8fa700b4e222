"""The configuration file reader: its limits, and that it reads ordinary files exactly as PyYAML does."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import yaml

from common.config_loader import (
    ALIAS_NODE_FLOOR,
    MAX_DEPTH,
    ConfigLoader,
    PurePythonConfigLoader,
    load_json_file,
    load_yaml_file,
)
from common.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LOADERS = [ConfigLoader, PurePythonConfigLoader]
SECTIONS = {"services": "service"}


def load(tmp_path: Path, text: str | bytes, loader: type = ConfigLoader) -> object:
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return load_yaml_file(path, "registry", SECTIONS, loader_class=loader)


def error(tmp_path: Path, text: str | bytes, loader: type = ConfigLoader) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, loader)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("loader", LOADERS, ids=["libyaml", "python"])
def test_ordinary_files_load_exactly_as_safe_load(tmp_path: Path, loader: type) -> None:
    files = [ROOT / "project_registry.yaml", *ROOT.glob("examples/**/*.yaml"), *ROOT.glob("docs/**/*.yaml")]
    assert files
    for path in files:
        assert load_yaml_file(path, "registry", loader_class=loader) == yaml.safe_load(path.read_text()), path


@pytest.mark.parametrize("loader", LOADERS, ids=["libyaml", "python"])
def test_anchors_and_merge_keys(tmp_path: Path, loader: type) -> None:
    text = ("base: &b {a: 1, c: [1, 2]}\n"
            "mid: &m {<<: *b, a: 2}\n"               # a merged key overridden: not a duplicate
            "services:\n  s1:\n    <<: [*m, *b]\n    a: 3\n  s2: *b\n")
    assert load(tmp_path, text, loader) == yaml.safe_load(text)


@pytest.mark.parametrize("loader", LOADERS, ids=["libyaml", "python"])
def test_alias_bomb_stops_early(tmp_path: Path, loader: type) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    message = error(tmp_path, "\n".join(lines) + "\n", loader)
    assert "aliases expand to" in message and "line 6" in message, message
    assert time.process_time() - started < 5  # generous: it stops after ~10^5 nodes, not 9^9
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


@pytest.mark.parametrize("loader", LOADERS, ids=["libyaml", "python"])
def test_alias_budget_grows_with_the_file(tmp_path: Path, loader: type) -> None:
    # 2,000 services each merging a 60-node block: 120,000 aliased nodes, over the floor,
    # but well under 10x the nodes the file writes itself
    block = "{" + ", ".join(f"k{i}: v" for i in range(30)) + "}"
    services = "".join(f"  s{i}: {{<<: *d, a: 1, b: 2, c: 3, d: 4, e: 5, f: 6}}\n" for i in range(2000))
    data = load(tmp_path, f"defaults: &d {block}\nservices:\n{services}", loader)
    assert len(data["services"]) == 2000  # type: ignore[index]
    assert 2000 * 61 > ALIAS_NODE_FLOOR


@pytest.mark.parametrize("loader", LOADERS, ids=["libyaml", "python"])
@pytest.mark.parametrize("text,fragments", [
    ("services:\n  s1:\n    port: 1\n    host: x\n    port: 2\n",
     ["service 's1'", "key 'port'", "duplicate key (first at line 3)", "at line 5"]),
    ("a: {yes: 1, true: 2}\n", ["key 'a.True'", "duplicate key"]),           # the same key once resolved
    ("x: &x {a: 1}\ny: {<<: *x, <<: *x}\n", ["key 'y.<<'", "duplicate key"]),
])
def test_duplicate_keys(tmp_path: Path, loader: type, text: str, fragments: list[str]) -> None:
    message = error(tmp_path, text, loader)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("loader", LOADERS, ids=["libyaml", "python"])
def test_depth(tmp_path: Path, loader: type) -> None:
    assert load(tmp_path, "[" * MAX_DEPTH + "]" * MAX_DEPTH, loader) is not None
    assert "nested deeper than 64" in error(tmp_path, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), loader)
    # through an alias: 40 + 40 levels, each half fine on its own
    text = "a: &x " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*x" + "]" * 40 + "\n"
    assert "key 'b[0][0]" in error(tmp_path, text, loader)
    deep = "a:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(1, 3000)) + "  " * 3000 + "  v\n"
    assert "nest" in error(tmp_path, deep, loader)  # block mappings: no RecursionError either


@pytest.mark.parametrize("loader", LOADERS, ids=["libyaml", "python"])
@pytest.mark.parametrize("text,fragment", [
    ("a: &x [1, *x]\n", "recursive alias"),
    ("a: &x {k: *x}\n", "recursive alias"),
    ("a: " + "1" * 5000 + "\n", "cannot read the value"),
    ("a: 2024-13-01\n", "cannot read the value"),
    ("a: *nope\n", "undefined alias"),
    ("a: [\n", "invalid YAML"),
    ("a: b\x00\n", "invalid YAML"),
])
def test_other_bad_yaml(tmp_path: Path, loader: type, text: str, fragment: str) -> None:
    assert fragment in error(tmp_path, text, loader)


def test_not_utf8(tmp_path: Path) -> None:
    message = error(tmp_path, b"version: 1\nname: caf\xe9\n")
    assert "not UTF-8 text: byte 0xe9 at offset 20 (line 2)" in message
    assert load(tmp_path, "\ufeffversion: 1\n") == {"version": 1}  # a BOM is fine


def json_error(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "jobs.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ConfigError) as info:
        load_json_file(path, "batch", {"jobs": "job"})
    return str(info.value)


@pytest.mark.parametrize("text,fragments", [
    ('{"jobs": [{"job_id": "a"}, {"job_id": "a", "job_id": "b"}]}', ["job #2", "key 'job_id'", "duplicate key"]),
    ('{"jobs": [{"params": {"x": {"y": 1, "y": 2}}}]}', ["job #1", "key 'params.x.y'", "duplicate key"]),
    ('{"d": 1, "d": 2, "jobs": []}', ["key 'd'", "duplicate key"]),
    ('{"jobs": [' + "[" * 70 + "]" * 70 + "]}", ["job #1", "nested deeper than 64"]),
    ('{"jobs": [' + "[" * 100_000 + "]" * 100_000 + "]}", ["nested deeper than 64"]),
    ('{"jobs": [], "x": NaN}', ["NaN is not JSON"]),
    (b'{"jobs": ["\xff"]}', ["not UTF-8", "offset 11"]),
])
def test_bad_json(tmp_path: Path, text: str, fragments: list[str]) -> None:
    message = json_error(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_json_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert load_json_file(path, "batch") is not None
