"""``module-system serve`` as a real process (uvicorn on 127.0.0.1, a free port) for the tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.orchestrator.serve.conftest import ServeProject

SERVE_LINE = re.compile(r"module-system serve: (http://\S+)/ ")


def serve_command() -> list[str]:
    return [str(Path(sys.executable).with_name("module-system")), "serve"]


def serve_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODULE_SYSTEM_")}
    env.update(extra or {})
    return env


@contextmanager
def running_server(project: ServeProject, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``module-system serve --port 0`` over ``project``; yield its base URL once it listens
    (the line it prints after binding); on leaving, SIGTERM and wait: it must exit 0."""
    process = subprocess.Popen(
        [*serve_command(), "--port", "0", "--registry", str(project.registry), "--state-dir", str(project.state_dir),
         "--max-workers", "4", *args],
        cwd=project.root, env=serve_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = SERVE_LINE.search(line)
        assert match, f"serve did not start: {line!r} {''.join(stderr)}"
        url = match.group(1)
        httpx.get(f"{url}/api/v1/health", timeout=10, headers=_auth(env)).raise_for_status()  # answering
        yield url
    finally:
        project.gate.set()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        drain.join(10)
    assert code == 0, "".join(stderr)


def _auth(env: dict[str, str] | None) -> dict[str, str]:
    token = (env or {}).get("MODULE_SYSTEM_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}
