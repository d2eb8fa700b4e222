"""``module-system plan``: what a run of a batch would do, from the sources' listings, downloading nothing.

For each job whose module is a file source (:class:`~common.interfaces.file_source.FileSource`),
the listing is walked as a run walks it and every entry is classified without a download:

* ``filtered``: left out by the filters (``include``/``exclude``, sizes, ages);
* ``too_large``: over ``max_file_bytes`` by its listed size (a run records it ``rejected``);
* ``unchanged``: ``incremental: true`` and its identity matches the service's state (a run
  records it ``skipped_unchanged``);
* ``changed``: in the state, with other version marks;
* ``new``: not in the state (every entry of a service that is not incremental).

A job whose module only has a raw ``fetch()`` (web, api) is reported as unable to plan; one whose
source cannot be listed, with the error. The destinations are read only for the incremental state
(nothing is written, no pre-flight).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from common.config_model import Batch, JobSpec, Registry, ServiceConfig
from common.exceptions import ModuleSystemError
from common.interfaces.base_module import JobContext
from common.interfaces.destination import FileDestination
from common.interfaces.file_source import Entry, FileSource
from common.plugins import ModuleCatalog, default_catalog
from common.retry import RetryPolicy
from common.validators import validators_for
from orchestrator.destination_pool import DestinationPool
from orchestrator.job_runner import previous_state

__all__ = ["ACTIONS", "JobPlan", "PlannedEntry", "plan_batch"]

Action = Literal["new", "changed", "unchanged", "filtered", "too_large"]
ACTIONS: tuple[Action, ...] = ("new", "changed", "unchanged", "filtered", "too_large")


@dataclass(frozen=True)
class PlannedEntry:
    name: str
    source_uri: str
    size: int | None
    action: Action

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source_uri": self.source_uri, "size": self.size, "action": self.action}


@dataclass
class JobPlan:
    job_id: str
    service_id: str
    status: Literal["planned", "cannot_plan", "failed"] = "planned"
    error: str | None = None
    entries: list[PlannedEntry] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        found = Counter(e.action for e in self.entries)
        return {a: found.get(a, 0) for a in ACTIONS}

    def bytes(self) -> dict[str, int]:
        found: Counter[str] = Counter()
        for e in self.entries:
            found[e.action] += e.size or 0
        return {a: found.get(a, 0) for a in ACTIONS}

    def to_dict(self, entries: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "service_id": self.service_id, "status": self.status,
                               "error": self.error, "files": self.counts(), "bytes": self.bytes()}
        if entries:
            out["entries"] = [e.to_dict() for e in self.entries]
        return out


def plan_batch(registry: Registry, batch: Batch, pool: DestinationPool,
               catalog: ModuleCatalog | None = None) -> Iterator[JobPlan]:
    """One :class:`JobPlan` per job of ``batch``, in batch order."""
    catalog = catalog or default_catalog()
    for job in batch.jobs:
        yield _plan_job(registry.services[job.service_id], job, pool, catalog)


def _plan_job(service: ServiceConfig, job: JobSpec, pool: DestinationPool, catalog: ModuleCatalog) -> JobPlan:
    plan = JobPlan(job.job_id, job.service_id)
    cls = catalog.load(service.type)
    if not issubclass(cls, FileSource):
        plan.status = "cannot_plan"
        plan.error = f"the {service.type!r} module walks its source as it reads it (no listing to plan from)"
        return plan
    retry = RetryPolicy(attempts=service.retry.attempts, backoff_s=service.retry.backoff_s,
                        max_backoff_s=service.retry.max_backoff_s)
    try:
        previous = {}
        if service.incremental:
            first = next(pool.get(d, service.timeout_s) for d in service.file_destinations)
            assert isinstance(first, FileDestination)
            previous = {uri: entry.identity for uri, entry in previous_state(first, service, job.job_id, retry).items()}
        ctx = JobContext(run_id="plan", job_id=job.job_id, service_id=service.service_id, module=service.type,
                         validators=validators_for(service.validate), retry=retry, timeout_s=service.timeout_s,
                         stop=threading.Event(), max_file_bytes=service.max_file_bytes, previous=previous)
        module = cls(job.sources[0], ctx)
        try:
            for entry in module.list_entries():
                plan.entries.append(PlannedEntry(entry.name, entry.source_uri, entry.size,
                                                 _action(module, entry, previous, service)))
        finally:
            module.close()
    except ModuleSystemError as exc:
        plan.status, plan.error = "failed", str(exc).splitlines()[0][:300]
    return plan


def _action(module: FileSource, entry: Entry, previous: dict[str, Any], service: ServiceConfig) -> Action:
    if not module.wanted(entry):
        return "filtered"
    if entry.size is not None and entry.size > service.max_file_bytes:
        return "too_large"
    if entry.source_uri in previous:
        unchanged = bool(entry.identity) and module.ctx.unchanged(entry.source_uri, entry.identity)
        return "unchanged" if unchanged else "changed"
    return "new"
