"""``module-system serve``: bind, check who may call, and run the app under uvicorn until a signal.

Reads ``--registry`` (the batches it is sent run against it), ``--state-dir`` and ``--log-dir``
(as ``run`` does), ``--history-db`` (the history it shows and records to), ``--tokens-file`` and
the token variables (:mod:`orchestrator.serve.auth`), ``--rate-limit``. Binding beyond loopback
without a token is refused (exit 2), as is a port that cannot be bound. SIGINT/SIGTERM stop it:
a batch still running is stopped cleanly first (its report written).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click

from common.exceptions import ConfigError
from common.terminal_text import printable
from orchestrator.exit_codes import ExitCode
from orchestrator.output_paths import check_writable_dir
from orchestrator.state_dir import check_state_dir

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be a port number (0-65535), not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def serve(host: str, port: int, registry_file: Path, state_dir: Path, log_dir: Path | None, history_db: str | None,
          tokens_file: Path | None, rate_limit: int, max_workers: int, monitor_duration: float) -> int:
    """Serve until stopped; the exit code. Raises ConfigError for a mistake in the options,
    the registry or the tokens (nothing is bound then)."""
    try:
        import uvicorn

        from orchestrator.serve.app import Server, create_app
    except ImportError as exc:
        raise ConfigError(f"module-system serve needs its extra ({exc.name} is missing): "
                          "pip install 'module_system[serve]'") from None
    from common.job_config import load_registry
    from orchestrator.history.store import HistoryUnavailable, history_url, shown
    from orchestrator.serve.auth import load_tokens
    from orchestrator.serve.runs import ServeSettings

    if max_workers < 1:
        raise ConfigError(f"--max-workers must be at least 1, not {max_workers}")
    if rate_limit < 0:
        raise ConfigError(f"--rate-limit must be 0 (no limit) or more requests a minute, not {rate_limit}")
    if not math.isfinite(monitor_duration) or monitor_duration < 0:
        raise ConfigError(f"--monitor-duration must be 0 or more seconds, not {monitor_duration}")
    tokens = load_tokens(tokens_file)
    if not tokens.configured and not is_loopback(host):
        raise ConfigError(f"--host {host} is not a loopback address: set MODULE_SYSTEM_API_TOKEN (or "
                          "--tokens-file) so that callers need a token, or serve on 127.0.0.1")
    registry = load_registry(registry_file)
    log_dir = log_dir if log_dir is not None else state_dir / "logs"
    check_state_dir(state_dir)
    check_writable_dir(log_dir, "--log-dir")
    url = history_url(history_db, state_dir)
    settings = ServeSettings(registry_file=registry.path, state_dir=state_dir, log_dir=log_dir, history_url=url,
                             max_workers=max_workers, monitor_duration=monitor_duration)
    sock = _listen(host, port)
    try:
        server = Server(settings, tokens, rate_limit)
    except HistoryUnavailable as exc:
        sock.close()
        click.echo(printable(f"error: the history database {shown(url)} cannot be used: {exc}"), err=True)
        return int(ExitCode.JOBS_FAILED)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(printable(f"module-system serve: http://{shown_host}:{bound_port}/ (registry {registry.path}; "
                         f"history {shown(url)}; {'token auth' if tokens.configured else 'no token: loopback only'})"))
    sys.stdout.flush()
    server_class = _server_class()
    config = uvicorn.Config(create_app(server), log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server_class(config).run(sockets=[sock])
    return int(ExitCode.OK)


def _server_class() -> type:
    import uvicorn

    class QuietExit(uvicorn.Server):
        """uvicorn's server, but a SIGINT/SIGTERM ends it with exit 0: uvicorn re-raises the signal
        after its graceful shutdown, which would end the process by the signal instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return QuietExit
