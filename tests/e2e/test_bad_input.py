"""Every bad input of INTERFACE sections 2 and 3: exit 2, one clear line, nothing run."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.helpers import Project

SECRET = "hunter2-very-secret"


def base_registry() -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": "landing", "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 1, "backoff_s": 0.01}},
        "services": {
            "ftp_sales": {
                "type": "ftp",
                "source": {"host": "127.0.0.1", "port": 2121, "user": "u", "password": "${FTP_PASSWORD}",
                           "path": "/out"},
                "validate": {"csv": {"columns": ["id", "amount"], "types": {"id": "int"}}},
            },
            "s3_fin": {
                "type": "s3",
                "source": {"bucket": "vendor", "endpoint_url": "${S3_URL}"},
                "validate": {"json_schema": "schema.json"},
            },
        },
    }


def base_jobs() -> list[dict[str, Any]]:
    return [{"job_id": "job_a", "service_id": "ftp_sales"}, {"job_id": "job_b", "service_id": "s3_fin"}]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(reg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = reg
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(reg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = reg
        for p in parents:
            node = node[p]
        del node[last]
    return mutate


# (id, registry mutation, expected fragments of the one line)
REGISTRY_CASES = [
    ("unknown_top_key", _set("colour", "blue"), ["project_registry.yaml", "colour", "unknown key"]),
    ("unknown_service_key", _set("services.ftp_sales.sauce", {}), ["service 'ftp_sales'", "sauce", "unknown key"]),
    ("unknown_source_key", _set("services.ftp_sales.source.hots", "x"), ["service 'ftp_sales'", "source.hots"]),
    ("wrong_type", _set("services.ftp_sales.source.port", "abc"), ["service 'ftp_sales'", "source.port", "integer"]),
    ("wrong_type_secret_not_echoed", _set("services.ftp_sales.source.password", 12345),
     ["service 'ftp_sales'", "source.password", "string"]),
    ("missing_required", _delete("services.ftp_sales.source.host"), ["service 'ftp_sales'", "source.host", "required"]),
    ("unknown_type", _set("services.ftp_sales.type", "gopher"), ["service 'ftp_sales'", "type", "gopher", "ftp", "s3"]),
    ("missing_schema_file", _set("services.s3_fin.validate.json_schema", "nope.json"),
     ["service 's3_fin'", "validate.json_schema", "does not exist"]),
    ("invalid_schema_file", _set("services.s3_fin.validate.json_schema", "bad_schema.json"),
     ["service 's3_fin'", "validate.json_schema", "not a valid JSON Schema"]),
    ("unset_env_var", _set("services.ftp_sales.source.user", "${SURELY_UNSET_VAR_42}"),
     ["service 'ftp_sales'", "source.user", "SURELY_UNSET_VAR_42"]),
    ("bad_csv_type", _set("services.ftp_sales.validate.csv.types", {"id": "integer"}),
     ["service 'ftp_sales'", "validate.csv.types.id"]),
    ("missing_bucket", lambda r: r["defaults"]["destination"].pop("bucket"),
     ["service 'ftp_sales'", "destination.bucket", "required"]),
    ("wrong_version", _set("version", 2), ["version"]),
    ("bad_retry", _set("services.ftp_sales.retry", {"attempts": 0}), ["service 'ftp_sales'", "retry.attempts"]),
    ("bad_fallback", _set("services.ftp_sales.fallback", [{"port": "x"}]),
     ["service 'ftp_sales'", "fallback[0].port"]),
    ("bad_css_selector", _set("services.ftp_sales.validate", {"html": {"required": ["a[[["]}}),
     ["service 'ftp_sales'", "validate.html.required[0]", "invalid CSS selector"]),
    ("bad_prefix_placeholder", _set("services.ftp_sales.destination", {"prefix": "x/{nope}/"}),
     ["service 'ftp_sales'", "destination.prefix", "nope"]),
]

BATCH_CASES = [
    ("duplicate_job_id", lambda jobs: jobs.append({"job_id": "job_a", "service_id": "s3_fin"}),
     ["jobs.json", "job 'job_a'", "duplicate"]),
    ("unknown_service_id", lambda jobs: jobs.append({"job_id": "job_c", "service_id": "nope"}),
     ["jobs.json", "job 'job_c'", "service_id", "nope"]),
    ("priority_out_of_range", lambda jobs: jobs[0].update(priority=11), ["job 'job_a'", "priority"]),
    ("unknown_param", lambda jobs: jobs[0].update(params={"hots": "x"}), ["job 'job_a'", "params", "hots"]),
    ("bad_param_type", lambda jobs: jobs[0].update(params={"port": "x"}), ["job 'job_a'", "params.port"]),
    ("unknown_job_key", lambda jobs: jobs[0].update(colour="red"), ["job 'job_a'", "colour"]),
    ("missing_service_id", lambda jobs: jobs[1].pop("service_id"), ["job 'job_b'", "service_id", "required"]),
]


@pytest.fixture()
def bad_project(project: Project) -> Project:
    project.env["FTP_PASSWORD"] = SECRET
    (project.root / "schema.json").write_text(json.dumps({"type": "object"}))
    (project.root / "bad_schema.json").write_text(json.dumps({"type": "objekt"}))
    return project


def assert_config_error(project: Project, result: Any, fragments: list[str], lines_expected: int = 1) -> None:
    """Exit 2, one ``error:`` line per mistake (the first holding every fragment), nothing run."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == lines_expected, result.stderr
    assert all(line.startswith("error: ") for line in lines)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout
    assert not (project.root / "temp").exists(), "nothing may run"


@pytest.mark.parametrize("case,mutate,fragments", REGISTRY_CASES, ids=[c[0] for c in REGISTRY_CASES])
def test_bad_registry_exits_2(bad_project: Project, case: str, mutate: Callable, fragments: list[str]) -> None:
    registry = copy.deepcopy(base_registry())
    mutate(registry)
    bad_project.write_registry(registry)
    batch = bad_project.write_batch(base_jobs())
    both = case == "missing_bucket"  # the default bucket is gone: both services lack one, both are named
    assert_config_error(bad_project, bad_project.run("--batch-file", str(batch)), fragments, 2 if both else 1)


@pytest.mark.parametrize("case,mutate,fragments", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_bad_batch_exits_2(bad_project: Project, case: str, mutate: Callable, fragments: list[str]) -> None:
    bad_project.write_registry(base_registry())
    jobs = base_jobs()
    mutate(jobs)
    batch = bad_project.write_batch(jobs)
    assert_config_error(bad_project, bad_project.run("--batch-file", str(batch)), fragments)


def test_malformed_batch_json(bad_project: Project) -> None:
    bad_project.write_registry(base_registry())
    (bad_project.root / "jobs.json").write_text('{"jobs": [ {"job_id": "a", ')
    result = bad_project.run("--batch-file", "jobs.json")
    assert_config_error(bad_project, result, ["jobs.json", "malformed JSON"])


def test_invalid_yaml(bad_project: Project) -> None:
    (bad_project.root / "project_registry.yaml").write_text("version: 1\nservices: {a: [}\n")
    batch = bad_project.write_batch(base_jobs())
    assert_config_error(bad_project, bad_project.run("--batch-file", str(batch)),
                        ["project_registry.yaml", "invalid YAML", "line"])


def test_missing_registry_file(bad_project: Project) -> None:
    batch = bad_project.write_batch(base_jobs())
    result = bad_project.run("--batch-file", str(batch), "--registry", "missing.yaml")
    assert_config_error(bad_project, result, ["missing.yaml", "cannot read"])


def test_missing_batch_file(bad_project: Project) -> None:
    bad_project.write_registry(base_registry())
    assert_config_error(bad_project, bad_project.run("--batch-file", "nope.json"), ["nope.json", "cannot read"])


def test_missing_batch_option_is_usage_error(bad_project: Project) -> None:
    result = bad_project.run()
    assert result.returncode == 2
    assert "--batch-file" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_command_checks_without_running(bad_project: Project) -> None:
    bad_project.write_registry(base_registry())
    batch = bad_project.write_batch(base_jobs())
    result = bad_project.cli("validate", "--batch-file", str(batch))
    assert result.returncode == 0, result.stderr
    assert "2 service(s)" in result.stdout and "2 job(s)" in result.stdout
    assert not (bad_project.root / "temp").exists()
    jobs = base_jobs() + [{"job_id": "job_a", "service_id": "s3_fin"}]
    bad = bad_project.write_batch(jobs, "dup.json")
    assert_config_error(bad_project, bad_project.cli("validate", "--batch-file", str(bad)), ["duplicate"])


def test_registry_from_environment(bad_project: Project) -> None:
    registry = base_registry()
    (bad_project.root / "conf").mkdir()
    path = bad_project.root / "conf" / "reg.yaml"
    bad_project.write_registry(registry).rename(path)
    (bad_project.root / "conf" / "schema.json").write_text(json.dumps({"type": "object"}))
    bad_project.env["MODULE_SYSTEM_REGISTRY"] = str(path)
    batch = bad_project.write_batch(base_jobs())
    result = bad_project.cli("validate", "--batch-file", str(batch))
    assert result.returncode == 0, result.stderr
