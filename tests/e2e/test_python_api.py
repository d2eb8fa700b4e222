"""The Python API (``module_system.run``, ``validate``, ``plan``) in this process, held to the CLI:
the same batch gives the same report through ``module_system.run()`` as through
``python -m orchestrator.cli_init --report``."""

from __future__ import annotations

import dataclasses
import inspect
import json
import signal
from pathlib import Path
from typing import Any

import pytest

import module_system
from module_system import ConfigError, ExitCode, JobSummary, RunResult
from tests.e2e.helpers import Project
from tests.e2e.test_local_source import seed

#: Report fields that differ from run to run whatever the code does.
VOLATILE = ("run_id", "started_at", "finished_at", "failed_jobs_file")


def registry(drop: Path) -> dict[str, Any]:
    """Two services of the local source into a local folder (``${LANDING}``): one checks CSV."""
    landing = {"type": "local", "path": "${LANDING}", "prefix": "{job_id}/ok/", "rejected_prefix": "{job_id}/bad/"}
    return {
        "version": 1,
        "services": {
            "sales": {"type": "local", "source": {"path": str(drop / "sales")}, "destination": landing,
                      "validate": {"csv": {"columns": ["id", "amount"], "types": {"amount": "float"}}}},
            "gone": {"type": "local", "source": {"path": str(drop / "missing")}, "destination": landing,
                     "retry": {"attempts": 1}},
        },
    }


JOBS = [{"job_id": "sales_1", "service_id": "sales", "priority": 8},
        {"job_id": "gone_1", "service_id": "gone"},
        {"job_id": "sales_2", "service_id": "sales", "params": {"include": ["b*.csv"]}}]


@pytest.fixture()
def drop(tmp_path: Path) -> Path:
    seed(tmp_path / "drop" / "sales", {"a.csv": b"id,amount\n1,2.5\n", "b.csv": b"id,amount\n2,x\n",
                                        "b2.csv": b"id,amount\n3,4\n"})
    return tmp_path / "drop"


def normalized(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if k not in VOLATILE}
    out["jobs"] = [{k: v for k, v in job.items() if k not in ("seconds", "started_at", "finished_at")}
                   for job in report["jobs"]]
    return out


def test_run_returns_the_report_the_cli_writes(project: Project, drop: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    project.write_registry(registry(drop))
    batch = project.write_batch(JOBS)
    project.env["LANDING"] = str(tmp_path / "landing_cli")
    cli = project.run("--batch-file", str(batch), "--report", "report.json", "--state-dir", "cli_state")
    assert cli.returncode == 1, cli.stderr[-2000:]
    cli_report = project.report()

    monkeypatch.chdir(project.root)
    monkeypatch.setenv("LANDING", str(tmp_path / "landing_api"))
    handler_before = signal.getsignal(signal.SIGINT)
    result = module_system.run(project.root / "project_registry.yaml", batch, max_workers=4,
                               state_dir=project.root / "api_state", report=project.root / "api_report.json")
    assert signal.getsignal(signal.SIGINT) is handler_before, "no signal handler unless asked"

    assert isinstance(result, RunResult)
    assert normalized(result.to_dict()) == normalized(cli_report)
    assert result.to_dict() == project.report("api_report.json"), "report= writes what run() returns"
    assert RunResult.from_dict(result.to_dict()) == result

    # typed, frozen, in batch order
    assert result.exit_code is ExitCode.JOBS_FAILED and not result.ok
    assert [j.job_id for j in result.jobs] == ["sales_1", "gone_1", "sales_2"]
    assert all(isinstance(j, JobSummary) for j in result.jobs)
    sales = result.job("sales_1")
    assert (sales.status, sales.files.uploaded, sales.files.rejected) == ("succeeded", 2, 1)
    assert result.job("sales_2").files.rejected == 1 and result.job("sales_2").files.landed == 1
    assert [j.job_id for j in result.failed_jobs] == ["gone_1"] and result.job("gone_1").error
    assert result.totals.jobs.failed == 1 and result.totals.files.rejected == 2
    assert result.failed_jobs_file is not None and result.failed_jobs_file.parent == project.root / "api_state"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.exit_code = ExitCode.OK  # type: ignore[misc]
    assert sorted(p.name for p in (tmp_path / "landing_api").rglob("*.csv")) == ["a.csv", "b.csv", "b.csv", "b2.csv", "b2.csv"]


def test_run_takes_mappings_and_rejected_ok(project: Project, drop: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("LANDING", str(tmp_path / "landing"))
    reg = registry(drop)
    result = module_system.run(reg, {"jobs": JOBS}, jobs=["sales_1"], rejected_ok=True, state_dir="state")
    assert [j.job_id for j in result.jobs] == ["sales_1"]
    assert result.batch_file == "<batch>"
    assert result.totals.files.rejected == 1 and result.exit_code is ExitCode.OK, "rejections alone are ok"
    assert reg == registry(drop), "the caller's mapping is not changed"
    again = module_system.run(reg, {"jobs": JOBS}, services=["gone"], state_dir="state")
    assert [j.job_id for j in again.jobs] == ["gone_1"] and again.exit_code is ExitCode.JOBS_FAILED
    failed = json.loads(again.failed_jobs_file.read_text())  # type: ignore[union-attr]
    assert failed["jobs"] == [{"job_id": "gone_1", "service_id": "gone", "priority": 5}]
    assert "registry" not in failed, "a registry given as a mapping has no file to record"


def test_validate_and_run_raise_every_mistake(project: Project, drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("LANDING", "landing")
    reg = registry(drop)
    checked = module_system.validate(reg, {"jobs": JOBS})
    assert checked.services == ("sales", "gone") and checked.jobs == ("sales_1", "gone_1", "sales_2")
    reg["services"]["sales"]["source"]["colour"] = "blue"
    reg["services"]["gone"]["retry"] = {"attempts": 0}
    with pytest.raises(ConfigError) as caught:
        module_system.validate(reg, {"jobs": JOBS})
    lines = [p.message for p in caught.value.problems]
    assert lines == ["<registry>: service 'sales': key 'source.colour': unknown key (allowed: "
                     + lines[0].split("(allowed: ")[1],
                     "<registry>: service 'gone': key 'retry.attempts': must be >= 1"]
    assert str(caught.value).splitlines() == lines
    with pytest.raises(ConfigError):
        module_system.run(reg, {"jobs": JOBS}, state_dir="state")
    assert not (project.root / "state").exists(), "nothing ran"
    with pytest.raises(ConfigError, match="job 'nope': not in the batch"):
        module_system.run(registry(drop), {"jobs": JOBS}, jobs=["nope"], state_dir="state")


def test_plan_lists_what_a_run_would_fetch(project: Project, drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("LANDING", "landing")
    plans = module_system.plan(registry(drop), {"jobs": JOBS}, jobs=["sales_2"])
    assert [(p.job_id, p.status) for p in plans] == [("sales_2", "planned")]
    assert plans[0].counts()["new"] == 2 and plans[0].counts()["filtered"] == 1
    assert not (project.root / "landing").exists(), "plan writes nothing"


def test_the_run_summary_carries_totals_and_exit_code(project: Project, drop: Path, tmp_path: Path) -> None:
    project.write_registry(registry(drop))
    batch = project.write_batch(JOBS)
    project.env["LANDING"] = str(tmp_path / "landing")
    result = project.run("--batch-file", str(batch), "--log-format", "json", "--rejected-ok", "--service", "sales")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = next(json.loads(line) for line in result.stdout.splitlines() if '"run_summary"' in line)
    assert summary["exit_code"] == 0
    assert summary["totals"]["files"]["rejected"] == 2 and summary["totals"]["jobs"]["succeeded"] == 2
    job_lines = [json.loads(line)["job_id"] for line in result.stdout.splitlines() if '"job_summary"' in line]
    assert job_lines == ["sales_1", "sales_2"], "--service picks the jobs of that service"


def test_py_typed_is_shipped() -> None:
    import tomllib

    root = Path(module_system.__file__).parent.parent
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package in ("module_system", "common", "orchestrator"):
        assert "py.typed" in data[package] and (root / package / "py.typed").is_file()


def test_the_facade_exports_what_all_names() -> None:
    """``__all__`` sorted and complete: every public name of the facade, and nothing it lacks."""
    helpers = {"annotations", "import_module", "version", "PackageNotFoundError", "TYPE_CHECKING", "Any"}
    public = {n for n in dir(module_system) if not n.startswith("_") and n not in helpers
              and not inspect.ismodule(getattr(module_system, n))}
    assert public == set(module_system.__all__) - {"__version__"}
    for name in module_system.__all__:
        assert getattr(module_system, name) is not None, name
