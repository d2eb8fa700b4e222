"""Before any job starts: can the run land anything in each of its destinations?

Every distinct destination of the batch's jobs (one instance of the run's
:class:`~orchestrator.destination_pool.DestinationPool`) is checked once, in batch order,
before the first job starts, by its own :meth:`~common.interfaces.destination.Destination.check`
(for ``s3``: ``HeadBucket`` and a write probe that leaves nothing behind, see
:mod:`destinations.s3`; ``local``: a writable folder; ``sql``: the database accepts the
login). Transient failures are retried by the policy of the first service using the
destination. A destination that still cannot be used raises
:class:`~common.interfaces.destination.DestinationUnusable`, a ConfigError: the CLI prints
one line naming the registry, the service(s), the destination and the reason, never a
credential, and exits 2; no job runs, no job log is written. (A destination may instead
log a transient problem and let the jobs fail their files: ``sql`` does, so a run whose
database is down still lands its files in S3, and the re-run loads them.)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import structlog

from common.config_model import Batch, Registry, ServiceConfig
from common.interfaces.destination import Destination, DestinationUnusable
from common.retry import RetryPolicy
from orchestrator.destination_pool import DestinationPool

__all__ = ["DestinationUnusable", "check_destinations"]

log = structlog.get_logger(__name__)


@dataclass
class _Use:
    destination: Destination
    service: ServiceConfig
    """The first service (in batch order) that writes here: its retry policy is used."""
    service_ids: list[str] = field(default_factory=list)


def check_destinations(registry: Registry, batch: Batch, pool: DestinationPool,
                       stop: threading.Event | None = None) -> None:
    """Check every destination of ``batch`` once; raise DestinationUnusable for the first that fails."""
    uses: dict[int, _Use] = {}
    for job in batch.jobs:
        service = registry.services[job.service_id]
        for spec in service.destinations:
            dest = pool.get(spec, service.timeout_s)
            use = uses.setdefault(id(dest), _Use(dest, service))
            if service.service_id not in use.service_ids:
                use.service_ids.append(service.service_id)
    for use in uses.values():
        retry = RetryPolicy(attempts=use.service.retry.attempts, backoff_s=use.service.retry.backoff_s,
                            max_backoff_s=use.service.retry.max_backoff_s, stop=stop)
        try:
            use.destination.check(retry)
        except DestinationUnusable as exc:
            services = ", ".join(f"'{s}'" for s in use.service_ids)
            where = use.destination.describe()
            log.info("run_not_started", destination=where, services=use.service_ids, reason=str(exc))
            raise DestinationUnusable(
                f"{registry.path}: service{'s' if len(use.service_ids) > 1 else ''} {services}: destination "
                f"{where} cannot be written: {exc}", destination=where, services=tuple(use.service_ids)) from None
    log.info("destinations_checked", destinations=len(uses))
