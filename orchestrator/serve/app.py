"""The ``serve`` application: :func:`create_app` wires the API, ``/metrics`` and the dashboard.

:class:`Server` holds what lives as long as the process serves: the history store and reader,
the log router (logging is configured once, for every batch the server runs) and the
:class:`~orchestrator.serve.runs.RunManager`; the app's lifespan closes it (a batch still
running is stopped cleanly: its jobs end ``cancelled``, its report is written).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from common.logger import configure_logging
from orchestrator.history.reader import HistoryReader
from orchestrator.history.store import HistoryStore
from orchestrator.serve.api import api_router, metrics_router
from orchestrator.serve.auth import RateLimiter, Tokens
from orchestrator.serve.dashboard import dashboard_router
from orchestrator.serve.runs import RunManager, ServeSettings

__all__ = ["Server", "create_app"]

log = structlog.get_logger(__name__)
STATIC = Path(__file__).with_name("static")


class Server:
    """The long-lived parts of one ``serve`` process."""

    def __init__(self, settings: ServeSettings, tokens: Tokens, rate_limit: int, log_format: str = "console") -> None:
        """Open the history (HistoryUnavailable when it cannot be) and start the runner thread."""
        self.settings, self.tokens = settings, tokens
        self.limiter = RateLimiter(rate_limit)
        self.store = HistoryStore.open(settings.history_url)
        self.reader = HistoryReader(self.store)
        router = configure_logging(settings.log_dir, log_format, stream=sys.stderr)
        self.manager = RunManager(settings, router, self.reader)

    def close(self) -> None:
        self.manager.close()
        self.store.close()


def create_app(server: Server) -> FastAPI:
    """The ASGI app of ``server``; its shutdown closes ``server``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.close()

    app = FastAPI(title="module_system", version="1", lifespan=lifespan,
                  description="Run history, live runs and batch submission of module_system (docs/SERVE.md).",
                  docs_url="/api/docs", redoc_url=None)
    app.state.server = server
    app.state.tokens = server.tokens
    app.state.limiter = server.limiter
    app.state.manager = server.manager
    app.state.reader = server.reader
    app.include_router(api_router)
    app.include_router(metrics_router)
    app.include_router(dashboard_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request_failed", path=request.url.path, error=f"{type(exc).__name__}: {str(exc)[:300]}",
                  exc_info=exc)
        return JSONResponse({"detail": "internal error (logged by the server)"}, status_code=500)

    return app


def _one_line(errors: Any) -> str:
    """FastAPI's validation errors as one line: ``body.jobs.0.job_id: String should match ...``."""
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
