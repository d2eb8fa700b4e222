"""Hostile and careless input at the configuration edge, through the CLI (issue 10, items 12,
14, 19 and 21): each bad file or option is one line and exit 2 before anything runs;
names from sources never reach the terminal raw; the failed-jobs file re-runs its jobs
against the registry they ran with."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Project, list_keys

SECRET = "hunter2-very-secret"


@pytest.fixture()
def vendor(s3) -> str:  # noqa: ANN001
    name = f"vendor-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="drop/a.json", Body=b'{"id": 1}')
    return name


def registry(bucket: str, vendor: str) -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 1, "backoff_s": 0.01}, "timeout_s": 10},
        "services": {
            "s3_fin": {"type": "s3", "source": {"bucket": vendor, "prefix": "drop/", "endpoint_url": "${S3_URL}"}},
            "s3_gone": {"type": "s3", "source": {"bucket": "no-such-vendor-bucket", "endpoint_url": "${S3_URL}"}},
        },
    }


#: A registry whose strings are all written by hand (YAML features the dumper never emits).
REGISTRY_YAML = """\
version: 1
defaults:
  destination: &dest {bucket: landing, endpoint_url: "${S3_URL}"}
services:
  s3_fin:
    type: s3
    source:
      <<: *dest
      bucket: vendor
      prefix: drop/
"""
LINES = REGISTRY_YAML.count("\n")


def one_error_line(project: Project, result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, exactly one line on stderr holding every fragment, no traceback, nothing run."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout
    assert not (project.root / "temp").exists(), "nothing may run"
    return lines[0]


def write_registry_text(project: Project, text: str | bytes, name: str = "project_registry.yaml") -> Path:
    path = project.root / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# --------------------------------------------------------------------------- item 12: the alias bomb


def alias_bomb() -> str:
    """The classic "billion laughs": nine levels of nine aliases, 9**9 strings once expanded."""
    lines = ["version: 1", "defaults:", '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        lines.append(f"  l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    lines += ["  bomb: *l8", "services: {}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("command", ["validate", "run"])
def test_yaml_alias_bomb_is_refused(project: Project, command: str) -> None:
    bomb = alias_bomb()
    assert len(bomb) < 700
    write_registry_text(project, bomb)
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    result = project.cli(command, "--batch-file", str(batch), timeout=60)
    one_error_line(project, result, "project_registry.yaml", "key 'defaults.", "aliases expand to", "line")


def test_anchors_and_merge_keys_still_work(project: Project) -> None:
    write_registry_text(project, REGISTRY_YAML)
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    result = project.cli("validate", "--batch-file", str(batch))
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- item 14


def test_duplicate_yaml_key_is_an_error(project: Project) -> None:
    text = REGISTRY_YAML + "      prefix: other/\n"  # prefix twice in s3_fin's source
    write_registry_text(project, text)
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    line = one_error_line(project, project.cli("validate", "--batch-file", str(batch)),
                          "project_registry.yaml", "service 's3_fin'", "key 'source.prefix'", "duplicate key")
    assert f"first at line {LINES}" in line and f"at line {LINES + 1}," in line


def test_duplicate_json_key_is_an_error(project: Project) -> None:
    write_registry_text(project, REGISTRY_YAML)
    batch = project.root / "jobs.json"
    batch.write_text('{"jobs": [{"job_id": "a", "service_id": "s3_fin", "params": {"prefix": "x/", "prefix": "y/"}}]}')
    one_error_line(project, project.run("--batch-file", str(batch)),
                   "jobs.json", "job #1", "key 'params.prefix'", "duplicate key")


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_registry_is_an_error(project: Project, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    write_registry_text(project, REGISTRY_YAML + f"      include: {nested}\n")
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    result = project.cli("validate", "--batch-file", str(batch))
    if depth == 65:
        one_error_line(project, result, "project_registry.yaml", "service 's3_fin'", "key 'source.include",
                       "nested deeper than 64 levels")
    else:  # libyaml's own limit (1,000 open flow collections) may speak first
        one_error_line(project, result, "project_registry.yaml", "nest")


@pytest.mark.parametrize("depth", [70, 100_000])
def test_deeply_nested_batch_is_an_error(project: Project, depth: int) -> None:
    write_registry_text(project, REGISTRY_YAML)
    batch = project.root / "jobs.json"
    nested = '{"a": ' * depth + "1" + "}" * depth
    batch.write_text('{"jobs": [{"job_id": "a", "service_id": "s3_fin", "params": ' + nested + "}]}")
    one_error_line(project, project.run("--batch-file", str(batch)), "jobs.json", "nested deeper than 64 levels")


def test_nesting_at_the_limit_is_fine(project: Project) -> None:
    # registry root (1) > services (2) > s3_fin (3) > source (4) > include (5): 60 lists reach level 64
    write_registry_text(project, REGISTRY_YAML + "      include: " + "[" * 60 + "]" * 60 + "\n")
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    result = project.cli("validate", "--batch-file", str(batch))
    # the loader lets it through; the schema (include: list of strings) then names the key
    assert "nested deeper" not in result.stderr and "Traceback" not in result.stderr
    assert "key 'source.include.0'" in result.stderr and result.returncode == 2


def test_non_utf8_registry_and_batch(project: Project) -> None:
    write_registry_text(project, REGISTRY_YAML.encode() + b"# caf\xe9\n")
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    one_error_line(project, project.cli("validate", "--batch-file", str(batch)),
                   "project_registry.yaml", "not UTF-8", "0xe9", f"offset {len(REGISTRY_YAML) + 5}", f"line {LINES + 1}")
    write_registry_text(project, REGISTRY_YAML)
    batch.write_bytes(b'{"description": "caf\xe9", "jobs": []}')
    one_error_line(project, project.cli("validate", "--batch-file", str(batch)), "jobs.json", "not UTF-8", "line 1")


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "-inf"])
def test_monitor_duration_must_be_finite(project: Project, value: str) -> None:
    write_registry_text(project, REGISTRY_YAML)
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    one_error_line(project, project.run("--batch-file", str(batch), "--monitor-duration", value),
                   "--monitor-duration", "finite")


@pytest.mark.parametrize("option,value", [("--report", "blocker/report.json"), ("--log-dir", "blocker/logs"),
                                          ("--log-dir", "/proc/module_system_cannot_be_here")])
def test_unwritable_report_or_log_dir_stops_before_any_job(project: Project, s3, bucket: str, vendor: str,  # noqa: ANN001
                                                           option: str, value: str) -> None:
    (project.root / "blocker").write_text("a file where a directory should be")
    project.write_registry(registry(bucket, vendor))
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    one_error_line(project, project.run("--batch-file", str(batch), option, value), option)
    assert list_keys(s3, bucket) == [], "no job may have run"


def test_job_id_too_long_for_a_file_name(project: Project) -> None:
    service = "s" * 60
    write_registry_text(project, REGISTRY_YAML.replace("  s3_fin:", f"  {service}:"))
    ok_id, long_id = "j" * (255 - len(f"_{service}_s3.log")), "j" * 200
    batch = project.write_batch([{"job_id": ok_id, "service_id": service}])
    assert project.cli("validate", "--batch-file", str(batch)).returncode == 0
    batch = project.write_batch([{"job_id": "fine", "service_id": service}, {"job_id": long_id, "service_id": service}])
    for result in (project.cli("validate", "--batch-file", str(batch)), project.run("--batch-file", str(batch))):
        one_error_line(project, result, "jobs.json", f"job '{long_id}'", "key 'job_id'", "too long", "log file name",
                       f"{len(f'{long_id}_{service}_s3.log')} bytes", "255")


# --------------------------------------------------------------------------- item 19: escape sequences


HOSTILE = "drop/\x1b[2J\x1b]0;owned\x07\x1b[31mred\u202egnp.json"


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_escape_sequences_in_names_never_reach_the_terminal(project: Project, s3, bucket: str, vendor: str,  # noqa: ANN001
                                                            fmt: str) -> None:
    s3.put_object(Bucket=vendor, Key=HOSTILE, Body=b'{"id": 2, "padding": "' + b"x" * 100 + b'"}')
    reg = registry(bucket, vendor)
    reg["services"]["s3_fin"]["max_file_bytes"] = 50  # the hostile object is refused: a warning names it
    project.write_registry(reg)
    batch = project.write_batch([{"job_id": "a", "service_id": "s3_fin"}])
    report = "report\x1b[31m.json"  # a report path with an escape sequence: printed in the summary
    result = project.run("--batch-file", str(batch), "--log-format", fmt, "--report", report)
    assert result.returncode == 1, result.stderr[-2000:]
    output = result.stdout + result.stderr
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in output, (raw, output[-2000:])
    # the name is still shown, escaped
    shown = "\\x1b[2J" if fmt == "console" else "\\u001b[2J"
    assert shown in result.stderr, result.stderr[-2000:]
    assert ("report\\x1b[31m.json" if fmt == "console" else "report\\u001b[31m.json") in result.stdout
    job = json.loads((project.root / report).read_text())["jobs"][0]
    assert job["files"]["rejected"] == 1 and job["files"]["uploaded"] == 1


# --------------------------------------------------------------------------- item 21: the re-run hint


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_rerun_hint_reruns_the_failed_jobs_against_the_same_registry(project: Project, s3, bucket: str,  # noqa: ANN001
                                                                     vendor: str, fmt: str) -> None:
    project.write_registry(registry(bucket, vendor)).rename(project.root / "other.yaml")
    batch = project.write_batch([{"job_id": "ok", "service_id": "s3_fin"},
                                 {"job_id": "broken", "service_id": "s3_gone", "priority": 7}])
    first = project.run("--batch-file", str(batch), "--registry", "other.yaml", "--log-format", fmt)
    assert first.returncode == 1, first.stderr[-2000:]
    if fmt == "json":
        summary = [json.loads(line) for line in first.stdout.splitlines() if '"run_summary"' in line][0]
        hint = summary["rerun"]
    else:
        match = re.search(r"\(re-run with (.+)\)\s*$", first.stdout, re.MULTILINE)
        assert match, first.stdout
        hint = match.group(1)
    args = shlex.split(hint)
    assert args[args.index("--registry") + 1] == "other.yaml"
    failed_file = project.root / args[args.index("--batch-file") + 1]
    recorded = json.loads(failed_file.read_text())
    assert recorded["registry"] == str((project.root / "other.yaml").resolve())
    assert [j["job_id"] for j in recorded["jobs"]] == ["broken"]

    again = project.run(*args, "--report", "again.json")
    assert again.returncode == 1, again.stderr[-2000:]  # the job still fails, but the run ran
    assert [j["job_id"] for j in project.report("again.json")["jobs"]] == ["broken"]

    # the file alone (no --registry) re-runs from another directory: it names its registry
    elsewhere = project.root / "elsewhere"
    elsewhere.mkdir()
    third = subprocess.run([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(failed_file),
                            "--report", "third.json"], cwd=elsewhere, env=project.env, capture_output=True,
                           text=True, timeout=120)
    assert third.returncode == 1, third.stderr[-2000:]
    assert [j["job_id"] for j in json.loads((elsewhere / "third.json").read_text())["jobs"]] == ["broken"]


def test_default_registry_gives_the_short_hint(project: Project, s3, bucket: str, vendor: str) -> None:  # noqa: ANN001
    project.write_registry(registry(bucket, vendor))
    batch = project.write_batch([{"job_id": "broken", "service_id": "s3_gone"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 1
    summary = [json.loads(line) for line in result.stdout.splitlines() if '"run_summary"' in line][0]
    assert shlex.split(summary["rerun"]) == ["--batch-file", summary["failed_jobs_file"]]
