"""Prometheus metrics of a run: :class:`RunMetrics`, a run observer with its own registry.

Each run gets a fresh :class:`prometheus_client.CollectorRegistry` (never the process-wide
one), so two runs in one process (tests, ``serve`` running batches) do not clash. ``run
--metrics-port N`` serves it on 127.0.0.1 while the run is in progress
(:func:`serve_metrics`, prometheus_client's own HTTP server); an ASGI app can mount it at
``/metrics`` (:func:`metrics_asgi_app`).

The counters equal the run report's ``totals`` once the run is over: jobs by final status, files
by status and bytes are those of each job's result (its last source attempt, as in its
manifest), counted live from the files of the attempt in progress; retries are the report's.

==============================================  ======================================================
``module_system_jobs_total{status}``            jobs that ended: succeeded, failed, timed_out, cancelled
``module_system_files_total{status}``           files by status (uploaded, skipped_same, ... failed)
``module_system_bytes_total``                   bytes uploaded
``module_system_retries_total``                 retries (every call retried by the retry policy)
``module_system_fallbacks_total``               jobs served by a fallback source
``module_system_job_duration_seconds{status}``  histogram of job durations
``module_system_file_duration_seconds{status}`` histogram of file durations (download to landing)
``module_system_jobs_queued``                   the queue depth: jobs waiting to start
``module_system_workers_busy``                  workers running a job
``module_system_workers``                       workers of the run
``module_system_host_slots_in_use{host}``       connection slots in use per host
``module_system_host_slots_limit{host}``        the host's cap (hosts with one)
``module_system_run_info{run_id}``              1, naming the run
==============================================  ======================================================
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.exceptions import ConfigError
from common.manifest import FILE_STATUSES
from orchestrator.run_observer import RunObserver, RunView
from orchestrator.run_stats import FINAL_STATUSES

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from common.manifest import ManifestEntry
    from orchestrator.job_runner import JobResult

__all__ = ["MetricsServer", "RunMetrics", "metrics_asgi_app", "serve_metrics"]

_JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
_FILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))


@dataclass
class _Attempt:
    number: int = 0
    files: Counter[str] = field(default_factory=Counter)
    bytes: int = 0


class RunMetrics(RunObserver):
    """The metrics of one run (see the module docstring); ``registry`` is its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._run: RunView | None = None
        self._jobs: Counter[str] = Counter()
        self._files: Counter[str] = Counter()
        self._bytes = 0
        self._retries = 0
        self._fallbacks = 0
        self._live: dict[str, _Attempt] = {}
        self.job_seconds = Histogram("module_system_job_duration_seconds", "Job durations by final status",
                                     ["status"], registry=self.registry, buckets=_JOB_BUCKETS)
        self.file_seconds = Histogram("module_system_file_duration_seconds",
                                      "File durations, download to landing, by status", ["status"],
                                      registry=self.registry, buckets=_FILE_BUCKETS)
        self.registry.register(_RunCollector(self))

    # ------------------------------------------------------------------ observer calls

    def run_started(self, run: RunView) -> None:
        self._run = run

    def file_done(self, job_id: str, attempt: int, entry: ManifestEntry, seconds: float | None) -> None:
        with self._lock:
            live = self._live.get(job_id)
            if live is None or live.number != attempt:  # a new source attempt starts the job's count again
                live = self._live[job_id] = _Attempt(attempt)
            live.files[entry.status] += 1
            if entry.status == "uploaded":
                live.bytes += entry.size
        if seconds is not None:
            self.file_seconds.labels(entry.status).observe(seconds)

    def event(self, kind: str, job_id: str | None, level: str, message: str, fields: Mapping[str, Any]) -> None:
        if kind == "retrying":
            with self._lock:
                self._retries += 1
        elif kind == "fallback_used":
            with self._lock:
                self._fallbacks += 1

    def job_finished(self, result: JobResult) -> None:
        with self._lock:
            self._live.pop(result.job_id, None)
            self._jobs[result.status] += 1
            self._files.update(result.files)
            self._bytes += result.bytes
        self.job_seconds.labels(result.status).observe(result.seconds)

    # ------------------------------------------------------------------ read

    def totals(self) -> dict[str, Any]:
        """The counters in the run report's ``totals`` shape."""
        with self._lock:
            files = Counter(self._files)
            size = self._bytes
            for live in self._live.values():
                files.update(live.files)
                size += live.bytes
            return {"jobs": {s: self._jobs.get(s, 0) for s in FINAL_STATUSES},
                    "files": {s: files.get(s, 0) for s in FILE_STATUSES}, "bytes": size, "retries": self._retries,
                    "fallbacks": self._fallbacks}


class _RunCollector(Collector):
    """The counters and gauges read when scraped (live values of the run)."""

    def __init__(self, metrics: RunMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        totals = self._metrics.totals()
        jobs = CounterMetricFamily("module_system_jobs", "Jobs that ended, by final status", labels=["status"])
        for status, count in totals["jobs"].items():
            jobs.add_metric([status], count)
        files = CounterMetricFamily("module_system_files", "Files by status", labels=["status"])
        for status, count in totals["files"].items():
            files.add_metric([status], count)
        yield jobs
        yield files
        yield CounterMetricFamily("module_system_bytes", "Bytes uploaded", value=totals["bytes"])
        yield CounterMetricFamily("module_system_retries", "Retries", value=totals["retries"])
        yield CounterMetricFamily("module_system_fallbacks", "Jobs served by a fallback source",
                                  value=totals["fallbacks"])
        run = self._metrics._run
        if run is None:
            return
        snapshot = run.stats.snapshot()
        yield GaugeMetricFamily("module_system_jobs_queued", "Jobs waiting to start", value=snapshot.jobs["queued"])
        yield GaugeMetricFamily("module_system_workers_busy", "Workers running a job", value=snapshot.jobs["running"])
        yield GaugeMetricFamily("module_system_workers", "Workers of the run",
                                value=min(run.max_workers, len(run.jobs)))
        in_use = GaugeMetricFamily("module_system_host_slots_in_use", "Connection slots in use", labels=["host"])
        limit = GaugeMetricFamily("module_system_host_slots_limit", "Connection slots of the host", labels=["host"])
        try:
            hosts = run.limiters.snapshot()
        except Exception:  # noqa: BLE001 - e.g. a Dask cluster's limiters gone: the rest is still served
            hosts = {}
        for host, (used, cap) in sorted(hosts.items()):
            in_use.add_metric([host], used)
            if cap is not None:
                limit.add_metric([host], cap)
        yield in_use
        yield limit
        info = GaugeMetricFamily("module_system_run_info", "The run", labels=["run_id"])
        info.add_metric([run.run_id], 1)
        yield info


class MetricsServer:
    """prometheus_client's HTTP server for one registry, on ``host:port`` (port 0: any free one)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` in a daemon thread; ConfigError (naming
    ``--metrics-port``) when the port cannot be bound."""
    from prometheus_client import start_http_server

    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-port must be a port number (0-65535), not {port}")
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return MetricsServer(server, thread)


def metrics_asgi_app(registry: CollectorRegistry) -> Any:
    """An ASGI app answering with ``registry``'s metrics (mount it at ``/metrics``)."""
    from prometheus_client import make_asgi_app

    return make_asgi_app(registry=registry)
