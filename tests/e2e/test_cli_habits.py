"""CLI habits (issue 14 item 6): MODULE_SYSTEM_<OPTION> variables, shell completion, -q, --job,
``validate``/``modules --format json``, ``modules TYPE``, and every mistake of a file at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.helpers import Project
from tests.e2e.test_local_source import seed


@pytest.fixture()
def local_project(project: Project, tmp_path: Path) -> Path:
    seed(tmp_path / "drop", {"a.csv": b"id\n1\n", "b.csv": b"id\n2\n"})
    project.env["LANDING"] = str(tmp_path / "landing")
    project.write_registry({
        "version": 1,
        "services": {name: {"type": "local", "source": {"path": str(tmp_path / "drop")},
                            "destination": {"type": "local", "path": "${LANDING}", "prefix": "{job_id}/"}}
                     for name in ("one", "two")},
    })
    return project.write_batch([{"job_id": "j1", "service_id": "one"}, {"job_id": "j2", "service_id": "two"},
                                {"job_id": "j3", "service_id": "two"}])


def test_options_come_from_module_system_variables(project: Project, local_project: Path) -> None:
    project.env.update({"MODULE_SYSTEM_BATCH_FILE": str(local_project), "MODULE_SYSTEM_REPORT": "from_env.json",
                        "MODULE_SYSTEM_JOB": "j1 j3", "MODULE_SYSTEM_LOG_FORMAT": "json",
                        "MODULE_SYSTEM_MAX_WORKERS": "0"})
    refused = project.cli("run")
    assert refused.returncode == 2 and "--max-workers must be at least 1" in refused.stderr
    project.env["MODULE_SYSTEM_MAX_WORKERS"] = "3"
    result = project.cli("run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [j["job_id"] for j in project.report("from_env.json")["jobs"]] == ["j1", "j3"]
    assert project.cli("run", "--job", "j2", "--report", "flag.json").returncode == 0
    assert [j["job_id"] for j in project.report("flag.json")["jobs"]] == ["j2"], "a flag beats the variable"


def test_job_and_service_pick_part_of_the_batch(project: Project, local_project: Path) -> None:
    result = project.run("--batch-file", str(local_project), "--service", "one", "--job", "j3", "--report", "r.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [j["job_id"] for j in project.report("r.json")["jobs"]] == ["j1", "j3"]
    unknown = project.run("--batch-file", str(local_project), "--job", "j9", "--service", "zzz")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines() == [
        f"error: {local_project}: job 'j9': not in the batch (--job)",
        f"error: {local_project}: service 'zzz': no job of the batch uses it (--service)"]


def test_quiet_prints_no_table_and_verbose_shows_info(project: Project, local_project: Path) -> None:
    quiet = project.run("--batch-file", str(local_project), "-q", "--log-format", "console")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    loud = project.run("--batch-file", str(local_project), "-v", "--log-format", "console")
    assert loud.returncode == 0 and "job_finished" in loud.stderr and "j2" in loud.stdout


def test_shell_completion(project: Project) -> None:
    project.env.update({"_MODULE_SYSTEM_COMPLETE": "bash_source"})
    script = project.cli()
    assert script.returncode == 0 and "_module_system_completion" in script.stdout
    project.env.update({"_MODULE_SYSTEM_COMPLETE": "bash_complete", "COMP_WORDS": "module-system sch",
                        "COMP_CWORD": "1"})
    assert project.cli().stdout.split() == ["plain,schema"]
    project.env.update({"COMP_WORDS": "module-system run --rej", "COMP_CWORD": "2"})
    assert project.cli().stdout.split() == ["plain,--rejected-ok"]


def test_validate_lists_every_mistake_as_text_and_json(project: Project, local_project: Path) -> None:
    registry = (project.root / "project_registry.yaml")
    text = registry.read_text().replace("path: ${LANDING}", "path: ${LANDING}\n      colour: red", 1)
    registry.write_text(text.replace("recursive", "recursive") + "colour: blue\n")
    result = project.cli("validate", "--batch-file", str(local_project))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: project_registry.yaml: ") for line in lines), lines
    assert "key 'colour': unknown key" in lines[0]
    assert "service 'one': key 'destination.colour': unknown key" in lines[1]
    as_json = project.cli("validate", "--batch-file", str(local_project), "--format", "json")
    assert as_json.returncode == 2
    document = json.loads(as_json.stdout)
    assert document["ok"] is False and [e["key"] for e in document["errors"]] == ["colour", "destination.colour"]
    assert document["errors"][1]["file"] == "project_registry.yaml" and document["errors"][1]["service"] == "one"
    assert document["errors"][0]["service"] is None


def test_a_file_with_many_mistakes_shows_twenty(project: Project, local_project: Path) -> None:
    jobs = [{"job_id": f"bad_{i}", "service_id": "nope"} for i in range(25)]
    batch = project.write_batch(jobs, "many.json")
    result = project.cli("validate", "--batch-file", str(batch))
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 21
    assert all(f"job 'bad_{i}': key 'service_id': unknown service 'nope'" in lines[i] for i in range(20))
    assert lines[20] == "error: ... and 5 more mistake(s) not shown"


def test_validate_and_modules_speak_json(project: Project, local_project: Path) -> None:
    ok = project.cli("validate", "--batch-file", str(local_project), "--format", "json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout) == {"ok": True, "registry": "project_registry.yaml", "services": ["one", "two"],
                                     "batch": str(local_project), "jobs": ["j1", "j2", "j3"]}
    listed = json.loads(project.cli("modules", "--format", "json").stdout)
    assert {(m["kind"], m["name"]) for m in listed} >= {("source", "ftp"), ("destination", "sql")}
    assert all(m["package"] and m["version"] and m["error"] is None for m in listed if m["name"] == "ftp")


def test_modules_type_prints_a_plugins_keys(project: Project) -> None:
    ftp = project.cli("modules", "ftp")
    assert ftp.returncode == 0
    assert ftp.stdout.startswith("source ftp  (module_system ")
    assert "    host  (string, non-empty)  [required]" in ftp.stdout
    assert "    port  (integer, >= 1, <= 65535)  [default: 21]" in ftp.stdout
    both = json.loads(project.cli("modules", "local", "--format", "json").stdout)
    assert [e["kind"] for e in both] == ["source", "destination"], "a source and a destination share the name"
    only = json.loads(project.cli("modules", "local", "--kind", "destination", "--format", "json").stdout)
    assert [k["key"] for k in only[0]["keys"]][:1] == ["path"]
    unknown = project.cli("modules", "gopher")
    assert unknown.returncode == 2 and "known: " in unknown.stderr and "ftp" in unknown.stderr
