"""The dashboard: server-rendered pages (Jinja2, readable without JavaScript) and a little script.

``/``              runs (newest first), the form to submit a batch, the hosts of the runs in progress
``/runs/{id}``     a run: counts, throughput over time (an SVG chart drawn here), its jobs with live
                   status (``static/dashboard.js`` follows ``/api/v1/runs/{id}/events``), the failed
                   jobs with their errors and a button that re-runs them, its events
``/jobs/{id}``     a job: its error, files (with their problems) and events
``/hosts``         per-host load of the runs in progress
``/login``         once tokens are configured: a form that keeps the token in an HttpOnly cookie

The buttons and the form call the JSON API (``POST /api/v1/batches``, ``.../retry-failed``,
``.../cancel``) from the script; reading needs no script.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from common.manifest import FILE_STATUSES
from orchestrator.serve.api import (
    RUN_ID,
    host_loads,
    pending_runs,
    require,
    run_detail,
    run_out,
)
from orchestrator.serve.auth import COOKIE, Tokens
from orchestrator.serve.models import RunOut, ThroughputOut

__all__ = ["dashboard_router"]

_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                         autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
FINAL_JOB = ("succeeded", "failed", "timed_out", "cancelled")


def _size(value: int | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _when(value: dt.datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


_TEMPLATES.filters.update(size=_size, when=_when, seconds=_seconds)


def chart(throughput: ThroughputOut, width: int = 1000, height: int = 140) -> dict[str, Any]:
    """The bars of a throughput chart (files per slice), in SVG coordinates."""
    files = throughput.files
    peak = max(files, default=0) or 1
    step = width / max(1, len(files))
    bars = [{"x": round(i * step, 1), "w": round(max(1.0, step - 1), 1), "h": round(height * n / peak, 1),
             "y": round(height - height * n / peak, 1), "n": n, "b": throughput.bytes[i] if i < len(throughput.bytes) else 0,
             "t": round(i * throughput.bucket_s, 1)} for i, n in enumerate(files)]
    return {"bars": bars, "width": width, "height": height, "peak": max(files, default=0),
            "bucket_s": throughput.bucket_s, "total": sum(files)}


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    tokens: Tokens = request.app.state.tokens
    html = _TEMPLATES.get_template(template).render(request=request, statuses=FILE_STATUSES,
                                                    auth=tokens.configured, **context)
    return HTMLResponse(html, status_code=status_code)


def _reader_allowed(request: Request) -> bool:
    try:
        require("read")(request)
    except HTTPException:
        return False
    return True


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


dashboard_router = APIRouter(include_in_schema=False)


@dashboard_router.get("/", response_class=HTMLResponse)
def index(request: Request, offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> Response:
    if not _reader_allowed(request):
        return _login_redirect(request)
    manager, reader = request.app.state.manager, request.app.state.reader
    page = reader.list_runs(limit=50, offset=offset)
    pending: list[RunOut] = pending_runs(manager, reader, page.items) if offset == 0 else []
    runs = pending + [run_out(r, manager) for r in page.items]
    registry = manager.settings.registry_file
    services = _services(manager)
    example = json.dumps({"description": "from the dashboard",
                          "jobs": [{"job_id": f"{sid}_1", "service_id": sid} for sid in services[:1]]}, indent=1)
    return _page(request, "index.html", runs=runs, total=page.total + len(pending), offset=offset,
                 limit=page.limit, registry=registry, services=services, example=example, hosts=[h.model_dump() for h in host_loads(manager)])


@dashboard_router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: Annotated[str, PathParam(pattern=RUN_ID)]) -> Response:
    if not _reader_allowed(request):
        return _login_redirect(request)
    manager, reader = request.app.state.manager, request.app.state.reader
    try:
        detail = run_detail(run_id, manager, reader, 60)
    except HTTPException:
        return _page(request, "missing.html", status_code=404, what=f"run {run_id}")
    served = manager.get(run_id)
    live = served.events.snapshot()["jobs"] if served is not None and not detail.jobs else []
    failed = [j for j in detail.jobs if j.status != "succeeded" and j.status in FINAL_JOB]
    return _page(request, "run.html", run=detail.run, jobs=detail.jobs, live_jobs=live, events=detail.events,
                 failed=failed, chart=chart(detail.throughput), following=detail.run.status in ("queued", "running"))


@dashboard_router.get("/jobs/{id}", response_class=HTMLResponse)
def job_page(request: Request, id: Annotated[int, PathParam(ge=1, le=2**62)]) -> Response:
    if not _reader_allowed(request):
        return _login_redirect(request)
    detail = request.app.state.reader.job(id, files_limit=500)
    if detail is None:
        return _page(request, "missing.html", status_code=404, what=f"job {id}")
    return _page(request, "job.html", job=detail.job, files=detail.files, events=detail.events)


@dashboard_router.get("/hosts", response_class=HTMLResponse)
def hosts_page(request: Request) -> Response:
    if not _reader_allowed(request):
        return _login_redirect(request)
    return _page(request, "hosts.html", hosts=[h.model_dump() for h in host_loads(request.app.state.manager)])


@dashboard_router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
    return _page(request, "login.html", next=_local(next), error=None)


@dashboard_router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _local((form.get("next") or ["/"])[0])
    tokens: Tokens = request.app.state.tokens
    wait = request.app.state.limiter.retry_after("login:" + (request.client.host if request.client else "unknown"))
    if wait:  # guessing tokens is as limited as any mutating request
        limited = _page(request, "login.html", status_code=429, next=target, error=f"too many attempts; retry in {wait} s")
        limited.headers["Retry-After"] = str(wait)
        return limited
    if tokens.configured and (not token or tokens.scopes(token) is None):
        return _page(request, "login.html", status_code=401, next=target, error="unknown token")
    response = RedirectResponse(target, status_code=303)
    if tokens.configured:
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


def _local(target: str) -> str:
    """Only a path of this site (never an open redirect)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _services(manager: Any) -> list[str]:
    from common.job_config import load_registry

    try:
        return sorted(load_registry(manager.settings.registry_file).services)
    except Exception:  # noqa: BLE001 - the form still shows; a submission names the registry's mistake
        return []
