"""A real Dask cluster for end-to-end tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

DASK = str(Path(sys.executable).with_name("dask"))


@dataclass
class DaskCluster:
    """A scheduler on a port of its own choosing and ``workers`` worker processes (no nanny: a worker
    killed stays dead), each with ``--nthreads`` threads, the environment ``env`` (the registry's
    variables and the S3 credentials) and a local directory under ``root``."""

    root: Path
    env: dict[str, str]
    workers: int = 2
    nthreads: int = 2
    scheduler: subprocess.Popen[bytes] | None = None
    worker_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    address: str = ""

    def __enter__(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        info = self.root / "scheduler.json"
        env = {**self.env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "5"}
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.root / "scheduler.log", "wb"))
        self.address = self._wait_for(lambda: json.loads(info.read_text())["address"] if info.exists() else None)
        for i in range(self.workers):
            self.worker_procs.append(subprocess.Popen(
                [DASK, "worker", self.address, "--nthreads", str(self.nthreads), "--no-nanny", "--name", f"w{i}",
                 "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(self.root / f"w{i}")],
                env={**env, "MODULE_SYSTEM_STATE_DIR": str(self.state_dir(i))},
                stdout=subprocess.DEVNULL, stderr=open(self.root / f"w{i}.log", "wb")))
        self._wait_for(lambda: len(self.worker_addresses()) == self.workers or None)
        return self

    def state_dir(self, index: int) -> Path:
        """Worker ``index``'s state directory (its ``$MODULE_SYSTEM_STATE_DIR``)."""
        return self.root / f"w{index}-state"

    def url(self) -> str:
        """The ``--executor`` value."""
        return "dask://" + self.address.removeprefix("tcp://")

    def worker_addresses(self) -> dict[str, str]:
        """Worker name -> address, as the scheduler knows them now."""
        from distributed import Client

        with Client(self.address, timeout="10s") as client:
            workers: dict[str, Any] = client.scheduler_info(n_workers=-1)["workers"]
        return {str(w["name"]): address for address, w in workers.items()}

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` (no clean shutdown: its tasks are lost mid-job)."""
        proc = self.worker_procs[index]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def _wait_for(self, probe: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = probe()
            except (OSError, ValueError, TimeoutError):
                found = None
            if found:
                return found
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError("dask scheduler exited: " + (self.root / "scheduler.log").read_text()[-2000:])
            time.sleep(0.1)
        raise TimeoutError("the Dask cluster did not come up")

    def __exit__(self, *exc: object) -> None:
        for proc in [*self.worker_procs, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.worker_procs, self.scheduler]:
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
