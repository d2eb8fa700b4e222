"""The JSON API under ``/api/v1`` (and ``/metrics``): routes, their auth and their answers.

Read endpoints need the ``read`` scope, mutating ones ``operate`` (once any token is
configured, :mod:`orchestrator.serve.auth`); mutating ones are rate limited per client. A bad
request is a 4xx with ``{"detail": "..."}``: 401/403 auth, 404 no such run or job, 409 the run
is not in a state that allows it, 422 a malformed request or a batch the registry refuses,
429 too many requests (``Retry-After``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse

from common.exceptions import ConfigError
from orchestrator.history.reader import HistoryReader, RunSummary
from orchestrator.serve.auth import COOKIE, DASHBOARD_HEADER, RateLimiter, Tokens
from orchestrator.serve.events import FINAL, ServerEvent
from orchestrator.serve.models import (
    BatchSubmission,
    Error,
    EventOut,
    Health,
    HostLoad,
    Hosts,
    JobDetailOut,
    JobOut,
    LogPageOut,
    RunAccepted,
    RunDetailOut,
    RunOut,
    RunPage,
    Stats,
    ThroughputOut,
)
from orchestrator.serve.runs import Conflict, RunManager, ServedRun

__all__ = ["RUN_ID", "api_router", "host_loads", "metrics_router", "pending_runs", "require", "run_detail", "run_out", "served_out"]

RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
RunId = Annotated[str, Path(pattern=RUN_ID, description="A run id (``module-system history`` lists them).")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error} for code in (401, 403, 404, 422)}
_MUTATING_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 409: {"model": Error}, 429: {"model": Error}}
POLL_S = 1.0
"""How often the events of a run in progress elsewhere (another process) are read from the history."""


# ---------------------------------------------------------------------- auth


def _token(request: Request) -> tuple[str | None, bool]:
    """The request's token and whether it came from the dashboard's cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def require(scope: Literal["read", "operate"]) -> Callable[[Request], str]:
    """A dependency: the caller's client key when it may use ``scope``; else 401/403 (and, for
    ``operate``, 403 cross-site and 429 past the rate limit)."""

    def check(request: Request) -> str:
        tokens: Tokens = request.app.state.tokens
        token, from_cookie = _token(request)
        client = request.client.host if request.client else "unknown"
        if scope == "operate":
            origin = request.headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
                raise HTTPException(403, "cross-site request refused (its Origin is not this server)")
        if tokens.configured:
            if token is None:
                raise HTTPException(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                                    headers={"WWW-Authenticate": "Bearer"})
            scopes = tokens.scopes(token)
            if scopes is None:
                raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            if scope not in scopes:
                raise HTTPException(403, f"this token lacks the '{scope}' scope",
                                    headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
            if scope == "operate" and from_cookie and not request.headers.get(DASHBOARD_HEADER):
                raise HTTPException(403, f"a request authenticated by the dashboard cookie needs the "
                                         f"{DASHBOARD_HEADER} header")
            client = "token:" + Tokens.digest(token)[:16]
        if scope == "operate":
            limiter: RateLimiter = request.app.state.limiter
            wait = limiter.retry_after(client)
            if wait:
                raise HTTPException(429, f"too many requests; retry in {wait} s", headers={"Retry-After": str(wait)})
        return client

    return check


Read = Depends(require("read"))
Operate = Depends(require("operate"))


def _manager(request: Request) -> RunManager:
    return request.app.state.manager  # type: ignore[no-any-return]


def _reader(request: Request) -> HistoryReader:
    return request.app.state.reader  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- shapes


def run_out(summary: RunSummary, manager: RunManager) -> RunOut:
    out = RunOut.model_validate(summary)
    out.seconds = summary.seconds
    served = manager.get(summary.run_id)
    if served is not None:
        out.served = True
        if served.state == "running" and out.status != "running":  # the history's last rows are on their way
            out.status = "running"
    return out


def served_out(served: ServedRun) -> RunOut:
    """A run of this server that the history does not hold (yet): queued, or it never started."""
    snapshot = served.events.snapshot()
    jobs: dict[str, int] = {}
    for job in snapshot["jobs"]:
        jobs[job["status"]] = jobs.get(job["status"], 0) + 1
    files: dict[str, int] = {}
    size = 0
    for job in snapshot["jobs"]:
        size += job["bytes"]
        for status, count in job["files"].items():
            files[status] = files.get(status, 0) + count
    status = {"queued": "queued", "running": "running", "cancelled": "cancelled"}.get(served.state, "failed")
    return RunOut(run_id=served.run_id, status=status, started_at=None,  # type: ignore[arg-type]
                  batch_file=str(served.batch.path),
                  registry_file=str(served.registry.path), jobs=jobs, files=files, bytes=size, served=True,
                  error=served.error)


def pending_runs(manager: RunManager, reader: HistoryReader, listed: Iterable[RunSummary]) -> list[RunOut]:
    """This server's runs that the history does not hold: queued, never started, or just started
    (the history's first rows are on their way); newest first."""
    known = {r.run_id for r in listed}
    return [served_out(s) for s in reversed(manager.served())
            if s.run_id not in known and (s.batch_run is None or s.state == "running")
            and reader.run(s.run_id, events_limit=1) is None]


def host_loads(manager: RunManager) -> list[HostLoad]:
    """Every host of the runs in progress in this server: slots in use and cap."""
    hosts = []
    for served in manager.served():
        view = served.events.view
        if served.state != "running" or view is None:
            continue
        for host, (used, cap) in sorted(view.limiters.snapshot().items()):
            hosts.append(HostLoad(run_id=served.run_id, host=host, in_use=used, capacity=cap))
    return hosts


def run_detail(run_id: str, manager: RunManager, reader: HistoryReader, buckets: int) -> RunDetailOut:
    detail = reader.run(run_id)
    if detail is not None:
        return RunDetailOut(run=run_out(detail.run, manager),
                            jobs=[JobOut.model_validate(j) for j in detail.jobs],
                            events=[EventOut.model_validate(e) for e in detail.events],
                            throughput=ThroughputOut.model_validate(reader.throughput(run_id, buckets)))
    served = manager.get(run_id)
    if served is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return RunDetailOut(run=served_out(served), jobs=[], events=[],
                        throughput=ThroughputOut(bucket_s=0, files=[], bytes=[]))


# ---------------------------------------------------------------------- routes

api_router = APIRouter(prefix="/api/v1")


@api_router.get("/runs", response_model=RunPage, responses=_ERRORS, tags=["runs"])
def list_runs(request: Request, _: str = Read,
              limit: Annotated[int, Query(ge=1, le=1000)] = 50,
              offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
              status: Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled"] | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None) -> RunPage:
    """Runs, newest first: those this server holds in its queue (or that never started), then the
    history's (every ``run``, from the CLI too)."""
    manager, reader = _manager(request), _reader(request)
    page = reader.list_runs(limit=limit, offset=offset, status=status, since=_utc(since), until=_utc(until))
    pending = [r for r in pending_runs(manager, reader, page.items) if status is None or r.status == status] \
        if offset == 0 else []
    items = pending + [run_out(r, manager) for r in page.items]
    return RunPage(items=items, total=page.total + len(pending), offset=offset, limit=limit)


@api_router.get("/runs/{run_id}", response_model=RunDetailOut, responses=_ERRORS, tags=["runs"])
def get_run(request: Request, run_id: RunId, _: str = Read,
            buckets: Annotated[int, Query(ge=1, le=1000, description="Slices of the throughput series.")] = 60,
            ) -> RunDetailOut:
    """One run: its summary and counts, its jobs in batch order, its latest events, and its
    throughput (files and bytes per time slice)."""
    return run_detail(run_id, _manager(request), _reader(request), buckets)


@api_router.get("/jobs/{id}", response_model=JobDetailOut, responses=_ERRORS, tags=["runs"])
def get_job(request: Request, id: Annotated[int, Path(ge=1, le=2**62, description="The job's history id.")],
            _: str = Read,
            files_limit: Annotated[int, Query(ge=1, le=1000)] = 100,
            files_offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
            file_status: Literal["uploaded", "skipped_same", "skipped_unchanged", "rejected", "failed"] | None = None,
            events_limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> JobDetailOut:
    """One job (by its history id, ``jobs[].id`` of a run): a page of its files and its events."""
    detail = _reader(request).job(id, files_limit=files_limit, files_offset=files_offset, file_status=file_status,
                                  events_limit=events_limit)
    if detail is None:
        raise HTTPException(404, f"no job {id}")
    return JobDetailOut.model_validate(detail.to_dict())


@api_router.get("/logs", response_model=LogPageOut, responses=_ERRORS, tags=["runs"])
def get_logs(request: Request, run_id: Annotated[str, Query(pattern=RUN_ID)], _: str = Read,
             job_id: Annotated[str | None, Query(max_length=200)] = None,
             level: Literal["debug", "info", "warning", "error", "critical"] | None = None,
             text: Annotated[str | None, Query(max_length=500, description="Case-insensitive, anywhere in the record.")]
             = None,
             since: dt.datetime | None = None, until: dt.datetime | None = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 200,
             offset: Annotated[int, Query(ge=0, le=2**62, description="A byte offset: ``next_offset`` of the last page.")]
             = 0) -> LogPageOut:
    """A run's log records (the executor's log) or one job's (its own log file), at least ``level``,
    holding ``text``, stamped in [``since``, ``until``); read on with ``offset=next_offset``."""
    reader = _reader(request)
    if reader.run(run_id, events_limit=1) is None:
        raise HTTPException(404, f"no run {run_id!r}")
    page = reader.log_records(run_id, job_id=job_id, level=level, text=text, since=_utc(since), until=_utc(until),
                              limit=limit, offset=offset)
    return LogPageOut.model_validate(page.to_dict())


@api_router.get("/hosts", response_model=Hosts, responses=_ERRORS, tags=["server"])
def get_hosts(request: Request, _: str = Read) -> Hosts:
    """Per host, the connection slots in use and the cap, for the runs in progress in this server."""
    return Hosts(hosts=host_loads(_manager(request)))


@api_router.get("/health", response_model=Health, responses=_ERRORS, tags=["server"])
def get_health(request: Request, _: str = Read) -> Health:
    """The server answers; ``history``: whether its database does."""
    try:
        _reader(request).list_runs(limit=1)
        history: Literal["ok", "unavailable"] = "ok"
    except Exception:  # noqa: BLE001 - any database failure is "unavailable"
        history = "unavailable"
    served = _manager(request).served()
    return Health(status="ok" if history == "ok" else "degraded", history=history, version=_version(),
                  runs_in_progress=sum(s.state == "running" for s in served),
                  runs_queued=sum(s.state == "queued" for s in served))


@api_router.get("/stats", response_model=Stats, responses=_ERRORS, tags=["server"])
def get_stats(request: Request, _: str = Read, since: dt.datetime | None = None) -> Stats:
    """Totals over every run in the history (started since ``since``)."""
    return Stats.model_validate(_reader(request).stats(since=_utc(since)))


@api_router.post("/batches", response_model=RunAccepted, status_code=202, responses=_MUTATING_ERRORS,
                 tags=["operate"])
def submit_batch(request: Request, batch: BatchSubmission, response: Response, _: str = Operate) -> RunAccepted:
    """Run a batch (as in a batch file) against the server's registry, in the background; the run id
    at once. A batch the registry refuses is 422 with the one-line reason."""
    try:
        served = _manager(request).submit(batch.model_dump(exclude_unset=True))
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    return _accepted(served, response)


@api_router.post("/runs/{run_id}/cancel", response_model=RunOut, responses=_MUTATING_ERRORS, tags=["operate"])
def cancel_run(request: Request, run_id: RunId, _: str = Operate) -> RunOut:
    """Stop a run this server started: a running one ends cleanly (jobs ``cancelled`` at their next
    file boundary, exit 130), a queued one never starts. 409 for a run that is over or was not
    started by this server."""
    manager = _manager(request)
    try:
        served = manager.cancel(run_id)
    except KeyError:
        if _reader(request).run(run_id, events_limit=1) is not None:
            raise HTTPException(409, f"run {run_id} was not started by this server") from None
        raise HTTPException(404, f"no run {run_id!r}") from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    detail = _reader(request).run(run_id, events_limit=1)
    return run_out(detail.run, manager) if detail is not None else served_out(served)


@api_router.post("/runs/{run_id}/retry-failed", response_model=RunAccepted, status_code=202,
                 responses=_MUTATING_ERRORS, tags=["operate"])
def retry_failed(request: Request, run_id: RunId, response: Response, _: str = Operate) -> RunAccepted:
    """A new run of exactly the jobs of ``run_id`` that did not succeed (its failed-jobs file)."""
    try:
        served = _manager(request).retry_failed(run_id)
    except KeyError:
        raise HTTPException(404, f"no run {run_id!r}") from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    return _accepted(served, response)


@api_router.get("/runs/{run_id}/events", responses={**_ERRORS, 200: {
    "content": {"text/event-stream": {}},
    "description": "Server-sent events: snapshot, progress, job_started, file, job_finished, error, run_finished."}},
    tags=["runs"])
async def run_events(request: Request, run_id: RunId, _: str = Read) -> EventSourceResponse:
    """Follow a run: ``snapshot`` first, then ``progress``, ``job_started``, ``file`` (a file's
    outcome), ``job_finished``, ``error``, and ``run_finished`` last. A finished run's stream is
    its ``run_finished`` alone."""
    manager, reader = _manager(request), _reader(request)
    served = manager.get(run_id)
    if served is not None:
        first, subscription = served.events.subscribe(asyncio.get_running_loop())

        async def live() -> AsyncIterator[dict[str, str]]:
            try:
                yield _sse(first)
                while subscription is not None:
                    event = await subscription.next_event()
                    yield _sse(event)
                    if event.kind == FINAL:
                        return
            finally:
                if subscription is not None:
                    served.events.unsubscribe(subscription)

        return EventSourceResponse(live(), ping=15)
    summary = await asyncio.to_thread(reader.run, run_id, 1)
    if summary is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return EventSourceResponse(_followed(reader, run_id, summary.run.status == "running"), ping=15)


async def _followed(reader: HistoryReader, run_id: str, running: bool) -> AsyncIterator[dict[str, str]]:
    """A run of another process, from the history: its progress each ``POLL_S`` while it runs, then
    its ``run_finished``."""
    seen: dict[str, str] = {}
    while True:
        detail = await asyncio.to_thread(reader.run, run_id, 1)
        if detail is None:
            return
        jobs: list[dict[str, Any]] = [{"job_id": j.job_id, "service_id": j.service_id, "status": j.status, "files": j.files,
                 "bytes": j.bytes, "error": j.error} for j in detail.jobs]
        if detail.run.status != "running" or not running:
            yield _sse(ServerEvent(FINAL, {"run_id": run_id, "status": detail.run.status,
                                           "exit_code": detail.run.exit_code, "error": None, "jobs": jobs}))
            return
        if not seen:
            yield _sse(ServerEvent("snapshot", {"run_id": run_id, "status": "running", "jobs": jobs, "progress": {}}))
        for job in jobs:
            if seen.get(job["job_id"]) != job["status"]:
                seen[job["job_id"]] = job["status"]
                kind = "job_started" if job["status"] == "running" else "job_finished"
                if job["status"] != "queued":
                    yield _sse(ServerEvent(kind, job))
        yield _sse(ServerEvent("progress", {"jobs": detail.run.jobs, "files": detail.run.files,
                                            "bytes": detail.run.bytes}))
        await asyncio.sleep(POLL_S)


metrics_router = APIRouter()


@metrics_router.get("/metrics", response_class=Response, responses={
    **_ERRORS, 200: {"content": {"text/plain": {}}, "description": "Prometheus' text format."}}, tags=["server"])
def metrics(request: Request, _: str = Read) -> Response:
    """The runs this server started, in Prometheus' text format (see docs/SERVE.md)."""
    return Response(generate_latest(request.app.state.manager.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------- helpers


def _accepted(served: ServedRun, response: Response) -> RunAccepted:
    url = f"/api/v1/runs/{served.run_id}"
    response.headers["Location"] = url
    return RunAccepted(run_id=served.run_id, status=served.state, run=url, events=f"{url}/events")


def _sse(event: ServerEvent) -> dict[str, str]:
    return {"event": event.kind, "data": json.dumps(event.data, default=str)}


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """``value`` in UTC (no zone: UTC); 422 for a time that has no UTC equivalent (year 1 at +01:00)."""
    if value is None:
        return None
    try:
        return value.astimezone(dt.timezone.utc) if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    except (OverflowError, ValueError):
        raise HTTPException(422, f"{value.isoformat()} is out of range") from None


def _version() -> str:
    try:
        return version("module_system")
    except PackageNotFoundError:
        return "unknown"
