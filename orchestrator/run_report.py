"""The run report (``--report``) and the failed-jobs file.

The failed-jobs file is in the batch format, so ``--batch-file`` on it re-runs exactly
the jobs that did not succeed (failed, timed out or cancelled), with their priorities
and params, against the registry of the run (recorded in it). :func:`rerun_args` is the
hint printed under the summary.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from common.config_model import Batch
from common.frozen import thaw
from common.manifest import FILE_STATUSES
from orchestrator.job_executor import RunOutcome
from orchestrator.run_stats import FINAL_STATUSES


def report_totals(outcome: RunOutcome) -> dict[str, Any]:
    """The report's ``totals``: jobs by final status, files by status, bytes uploaded, retries
    (the history keeps the same document; the metrics count the same)."""
    jobs = Counter(r.status for r in outcome.results)
    files: Counter[str] = Counter()
    for result in outcome.results:
        files.update(result.files)
    return {
        "jobs": {s: jobs.get(s, 0) for s in FINAL_STATUSES},
        "files": {s: files.get(s, 0) for s in FILE_STATUSES},
        "bytes": sum(r.bytes for r in outcome.results),
        "retries": outcome.stats.retries,
    }


def build_report(outcome: RunOutcome, batch: Batch, failed_jobs_file: Path | None) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "started_at": outcome.started_at.isoformat(timespec="milliseconds"),
        "finished_at": outcome.finished_at.isoformat(timespec="milliseconds"),
        "exit_code": int(outcome.exit_code),
        "batch_file": str(batch.path),
        "failed_jobs_file": str(failed_jobs_file) if failed_jobs_file else None,
        "totals": report_totals(outcome),
        "jobs": [r.to_dict() for r in outcome.results],
    }


def write_failed_jobs(outcome: RunOutcome, batch: Batch, temp_dir: Path, registry: Path | None = None) -> Path | None:
    """``<temp_dir>/failed_jobs_<run_id>.json`` (``temp_dir`` is the run's ``--state-dir``) with every job that did not succeed, or None.

    ``registry`` (the run's) is recorded as an absolute path under the batch key
    ``registry``, so that the file re-runs its jobs against the same services from any
    directory, without ``--registry``."""
    redo = {r.job_id for r in outcome.results if r.status != "succeeded"}
    if not redo:
        return None
    jobs = []
    for job in batch.jobs:
        if job.job_id in redo:
            entry: dict[str, Any] = {"job_id": job.job_id, "service_id": job.service_id, "priority": job.priority}
            if job.params:
                entry["params"] = thaw(job.params)
            jobs.append(entry)
    path = temp_dir / f"failed_jobs_{outcome.run_id}.json"
    document: dict[str, Any] = {"description": f"Jobs of run {outcome.run_id} that did not succeed ({batch.path})"}
    if registry is not None:
        document["registry"] = str(registry.resolve())
    written = write_json(path, {**document, "jobs": jobs}, what="the failed-jobs file")
    return path if written else None


def write_json(path: Path, document: Any, what: str = "the report") -> bool:
    """Write ``document`` to ``path`` atomically (a ``.tmp`` file, then a rename).

    The run is over when this is called, so a write that fails (a full disk, a folder that
    is not writable) is one ``error:`` line on stderr and False, never a traceback: the
    exit code stays that of the run.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        click.echo(f"error: cannot write {what} {path}: {exc.strerror or exc}", err=True)
        return False
    return True


def rerun_args(failed_jobs_file: Path, registry: Path, default_registry: Path) -> list[str]:
    """The command-line arguments that re-run a failed-jobs file: ``--batch-file`` and,
    when the run's registry was not the default one, ``--registry`` (the file records it
    too; the hint says it so that what is printed is what will run)."""
    args = ["--batch-file", str(failed_jobs_file)]
    if registry.resolve() != default_registry.resolve():
        args += ["--registry", str(registry)]
    return args
