"""``module-system check``: can the run reach every source and destination? One connection each.

Per service (of the batch, or of the whole registry):

* its **source** (the primary one): a file source lists until its first entry (so the
  credentials and the folder, bucket or path are tried); a module that walks its source as it
  reads it (web, api) has each of its hosts (``hosts()``) opened with a TCP connection. The answer
  is ``reachable``, ``auth_failed`` (credentials refused), ``missing`` (no such folder, bucket
  or path) or ``unreachable`` (with the reason);
* each **destination**: its pre-flight check (``check()``: for s3 ``HeadBucket`` and a write probe
  that leaves nothing; local: a probe file; sql: a login), ``reachable`` or ``unusable``.

Nothing is downloaded and nothing lands.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from common.config_model import ServiceConfig
from common.exceptions import ConfigError, ModuleSystemError
from common.interfaces.base_module import JobContext
from common.interfaces.file_source import FileSource
from common.plugins import ModuleCatalog, default_catalog
from common.retry import RetryPolicy
from common.validators import validators_for
from orchestrator.destination_pool import DestinationPool

__all__ = ["ServiceCheck", "check_services"]

Verdict = Literal["reachable", "auth_failed", "missing", "unreachable", "unusable"]
_MISSING = ("does not exist", "no such", "not found", "550 ", "not a folder")


@dataclass
class ServiceCheck:
    service_id: str
    source: Verdict = "reachable"
    source_detail: str | None = None
    destinations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.source == "reachable" and all(d["verdict"] == "reachable" for d in self.destinations)

    def to_dict(self) -> dict[str, Any]:
        return {"service_id": self.service_id, "ok": self.ok, "source": self.source,
                "source_detail": self.source_detail, "destinations": self.destinations}


def check_services(services: Iterable[ServiceConfig], pool: DestinationPool,
                   catalog: ModuleCatalog | None = None) -> list[ServiceCheck]:
    catalog = catalog or default_catalog()
    results = []
    for service in services:
        result = ServiceCheck(service.service_id)
        retry = RetryPolicy(attempts=1, backoff_s=0, max_backoff_s=0)
        result.source, result.source_detail = _source(service, catalog, retry)
        for spec in service.destinations:
            dest = pool.get(spec, service.timeout_s)
            entry: dict[str, Any] = {"name": spec.name, "type": spec.type, "where": dest.describe()}
            try:
                dest.check(retry)
                entry.update(verdict="reachable", detail=None)
            except ConfigError as exc:
                entry.update(verdict="unusable", detail=str(exc).splitlines()[0][:300])
            result.destinations.append(entry)
        results.append(result)
    return results


def _source(service: ServiceConfig, catalog: ModuleCatalog, retry: RetryPolicy) -> tuple[Verdict, str | None]:
    cls = catalog.load(service.type)
    if not issubclass(cls, FileSource):
        for host in cls.hosts(service.source):
            problem = _connect(host, service.timeout_s)
            if problem is not None:
                return "unreachable", problem
        return "reachable", None
    ctx = JobContext(run_id="check", job_id="check", service_id=service.service_id, module=service.type,
                     validators=validators_for(service.validate), retry=retry, timeout_s=service.timeout_s,
                     stop=threading.Event(), max_file_bytes=service.max_file_bytes)
    module = cls(service.source, ctx)
    try:
        next(iter(module.list_entries()), None)
    except ModuleSystemError as exc:
        text = str(exc).splitlines()[0][:300]
        name = type(exc).__name__
        if "Auth" in name or "Unauthorized" in name:
            return "auth_failed", text
        if any(word in text.lower() for word in _MISSING):
            return "missing", text
        return "unreachable", text
    finally:
        module.close()
    return "reachable", None


def _connect(host: str, timeout_s: float) -> str | None:
    """None when a TCP connection to ``scheme://host:port`` opens, else why not."""
    parts = urlsplit(host)
    port = parts.port or {"https": 443, "http": 80, "ftp": 21, "sftp": 22}.get(parts.scheme, 0)
    if not parts.hostname or not port:
        return None
    try:
        with socket.create_connection((parts.hostname, port), timeout=min(timeout_s, 10)):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port}: {exc.strerror or type(exc).__name__}"
