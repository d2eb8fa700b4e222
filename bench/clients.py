"""The three measured clients, each a child process of its own.

* :class:`ModuleSystemClient`: ``python -m orchestrator.cli_init --batch-file ...`` with a
  registry of one ``ftp`` service per dataset (CSV column types for A and B, the JSON
  Schema :data:`bench.datasets.ORDER_SCHEMA` for C), the bucket given through
  ``${BENCH_BUCKET}``, in one of two shapes: ``single`` (the way a user runs it: one job
  over the dataset's flat folder, the service's defaults: no ``limits.max_connections``,
  default ``transfers``) and ``split`` (one job per sub-folder of the tree, and
  ``limits.max_connections`` raised to the worker count, so that as many jobs run at once
  as rclone has transfers). Two more registries per shape, identical but for
  ``incremental: true`` (the incremental re-run) and for no ``validate`` section (an
  experiment: what validation costs), serve the other runs.
* :class:`RcloneClient`: ``rclone copy src:<folder> dst:<bucket>`` (or ``s3src:<bucket>``, a
  second S3 remote on the same server) with the remotes configured through
  ``RCLONE_CONFIG_*`` environment variables, ``--transfers`` and ``--checkers`` the same
  width; no validation.
* :func:`run_raw_probe`: :mod:`bench.raw_probe`, boto3 from local disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.datasets import CSV_COLUMNS, CSV_TYPES, ORDER_SCHEMA, Dataset
from bench.measure import ProcessResult, Servers, run_process
from bench.servers import REPO, ServerProcess

__all__ = ["ModuleSystemClient", "RcloneClient", "base_env", "rclone_missing_message", "run_raw_probe"]

RCLONE_INSTALL = "apt-get install -y rclone   (Debian/Ubuntu; or see https://rclone.org/install/)"


def base_env(servers: Servers) -> dict[str, str]:
    """The environment of every child: no stray AWS settings, the test credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODULE_SYSTEM_", "RCLONE_"))}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "S3_URL": servers.s3_url})
    return env


def service_id(dataset: str) -> str:
    return f"bench_{dataset.lower()}"


#: ``single``: one job over the flat folder, service defaults; ``split``: a job per sub-folder, cap raised.
SHAPES = ("single", "split")
VARIANTS = ("plain", "incremental", "no_validate")


def shared_state_dir(runs: Path) -> Path:
    """The ``--state-dir`` every module_system run of the benchmark shares (``<runs>/ms_state``), as
    the runs of a cron job share theirs: its history database is made once, untimed, here (a
    user's first run makes it; a new database costs that run the import of SQLAlchemy, which the
    runs after it do not pay)."""
    state = runs / "ms_state"
    if not (state / "history.sqlite3").exists():
        from orchestrator.history.store import HistoryStore, history_url

        state.mkdir(parents=True, exist_ok=True)
        HistoryStore.open(history_url(None, state)).close()
    return state.resolve()


class ModuleSystemClient:
    """The module_system CLI over the FTP datasets; one working directory per run."""

    def __init__(self, workdir: Path, servers: Servers, datasets: dict[str, Dataset], max_workers: int) -> None:
        self.dir = workdir / "module_system"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.servers, self.datasets, self.max_workers = servers, datasets, max_workers
        (self.dir / "order.schema.json").write_text(json.dumps(ORDER_SCHEMA, indent=1))
        self.registries = {(shape, variant): self._write_registry(shape, variant)
                           for shape in SHAPES for variant in VARIANTS}
        self.batches = {(name, shape): self._write_batch(ds, shape) for name, ds in datasets.items() for shape in SHAPES}
        ftp = servers.ftp.info
        self.env = {**base_env(servers), "FTP_PORT": str(ftp["port"]), "FTP_USER": ftp["user"],
                    "FTP_PASSWORD": ftp["password"], "LOG_LEVEL": "INFO"}

    def prefix(self, dataset: str) -> str:
        """Where valid files of ``dataset`` land (the ftp type's default prefix)."""
        return f"data/ftp/{service_id(dataset)}/validated/"

    def _write_registry(self, shape: str, variant: str) -> Path:
        """``plain``; ``incremental`` (the same, ``incremental: true``); ``no_validate`` (no validate section)."""
        services: dict[str, Any] = {}
        for ds_name, ds in self.datasets.items():
            validate: dict[str, Any] = ({"json_schema": "order.schema.json"} if ds.spec.kind == "json" else
                                        {"csv": {"columns": list(CSV_COLUMNS), "types": CSV_TYPES}})
            folder = ds.flat_root if shape == "single" else ds.root
            services[service_id(ds_name)] = {
                "type": "ftp",
                "source": {"host": "127.0.0.1", "port": "${FTP_PORT}", "user": "${FTP_USER}",
                           "password": "${FTP_PASSWORD}", "path": "/" + folder.name},
                **({} if variant == "no_validate" else {"validate": validate}),
            }
        defaults: dict[str, Any] = {"destination": {"bucket": "${BENCH_BUCKET}", "endpoint_url": "${S3_URL}"}}
        if shape == "split":
            defaults["limits"] = {"max_connections": self.max_workers}
        if variant == "incremental":
            defaults["incremental"] = True
        registry = {"version": 1, "defaults": defaults, "services": services}
        path = self.dir / f"registry_{shape}_{variant}.yaml"
        path.write_text(yaml.safe_dump(registry, sort_keys=False))
        return path

    def _write_batch(self, ds: Dataset, shape: str) -> Path:
        name = ds.spec.name.lower()
        if shape == "single":
            jobs: list[dict[str, Any]] = [{"job_id": f"{name}_all", "service_id": service_id(ds.spec.name)}]
        else:
            jobs = [{"job_id": f"{name}_{sub}", "service_id": service_id(ds.spec.name),
                     "params": {"path": f"/{ds.root.name}/{sub}"}} for sub in ds.subfolders]
        path = self.dir / f"batch_{ds.spec.name}_{shape}.json"
        path.write_text(json.dumps({"description": f"benchmark dataset {ds.spec.name}, {shape} shape", "jobs": jobs},
                                   indent=1))
        return path

    def run(self, dataset: str, bucket: str, label: str, shape: str = "single", variant: str = "plain",
            timeout_s: float = 3600, wrap: Sequence[str] = (),
            switch_interval: float | None = None, extra: Sequence[str] = ()) -> tuple[ProcessResult, dict[str, Any]]:
        """One CLI run into ``bucket``; its cost and its ``--report`` (empty if none was written).

        ``shape`` picks the batch and registry (``single``, ``split``), ``variant`` the
        registry's variant (``plain``, ``incremental``, ``no_validate``); ``wrap`` goes before
        the command (a profiler: ``py-spy record ... --``); ``extra`` goes after the CLI's
        arguments (``--no-history``); ``switch_interval`` runs the CLI
        through ``bench/cli_switch.py`` with that GIL switch interval. The run's directory and
        log stay until :meth:`discard` (the caller drops them once the run checked out).
        """
        run_dir = self.dir / label
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        cli = (["-m", "orchestrator.cli_init"] if switch_interval is None else
               [str(REPO / "bench" / "cli_switch.py"), str(switch_interval)])
        argv = [*wrap, sys.executable, *cli, "--batch-file", str(self.batches[dataset, shape]),
                "--registry", str(self.registries[shape, variant]), "--max-workers", str(self.max_workers),
                "--report", "report.json", "--log-format", "json", "--log-dir", "logs",
                "--state-dir", str(shared_state_dir(self.dir.parent)), *extra]
        env = {**self.env, "BENCH_BUCKET": bucket}
        result = run_process(argv, cwd=run_dir, env=env, log=self.dir / f"{label}.log", servers=self.servers,
                             timeout_s=timeout_s)
        report_path = run_dir / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        return result, report

    def discard(self, label: str) -> None:
        """Drop the directory and log of run ``label`` (kept only for runs that failed their check)."""
        shutil.rmtree(self.dir / label, ignore_errors=True)
        (self.dir / f"{label}.log").unlink(missing_ok=True)


def rclone_missing_message() -> str | None:
    """None when rclone is on PATH; else how to install it."""
    if shutil.which("rclone"):
        return None
    return f"rclone is not installed: the ratios against rclone are skipped. Install it with:\n    {RCLONE_INSTALL}"


class RcloneClient:
    """``rclone copy`` from the FTP server to the S3 server, remotes set in the environment."""

    def __init__(self, workdir: Path, servers: Servers, transfers: int) -> None:
        binary = shutil.which("rclone")
        if binary is None:
            raise RuntimeError(rclone_missing_message())
        self.binary, self.servers, self.transfers = binary, servers, transfers
        self.dir = workdir / "rclone"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "rclone.conf").write_text("")  # remotes come from the environment only
        ftp = servers.ftp.info
        obscured = subprocess.run([binary, "obscure", ftp["password"]], capture_output=True, text=True,
                                  check=True).stdout.strip()
        self.env = {
            **base_env(servers), "RCLONE_CONFIG": str(self.dir / "rclone.conf"),
            "RCLONE_CONFIG_SRC_TYPE": "ftp", "RCLONE_CONFIG_SRC_HOST": ftp["host"],
            "RCLONE_CONFIG_SRC_PORT": str(ftp["port"]), "RCLONE_CONFIG_SRC_USER": ftp["user"],
            "RCLONE_CONFIG_SRC_PASS": obscured,
            "RCLONE_CONFIG_DST_TYPE": "s3", "RCLONE_CONFIG_DST_PROVIDER": "Other",
            "RCLONE_CONFIG_DST_ENDPOINT": servers.s3_url, "RCLONE_CONFIG_DST_REGION": "us-east-1",
            "RCLONE_CONFIG_DST_ACCESS_KEY_ID": "testing", "RCLONE_CONFIG_DST_SECRET_ACCESS_KEY": "testing",
            "RCLONE_CONFIG_DST_FORCE_PATH_STYLE": "true",
        }
        # a second S3 remote on the same server, the source of the S3 -> S3 row
        self.env.update({k.replace("_DST_", "_S3SRC_"): v for k, v in self.env.items() if "_DST_" in k})

    def version(self) -> str:
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0] if out else "unknown"

    def run(self, source: str, bucket: str, label: str, timeout_s: float = 3600,
            source_server: ServerProcess | None = None) -> ProcessResult:
        """``rclone copy SOURCE dst:BUCKET``: ``src:<folder>`` (FTP) or ``s3src:<bucket>`` (the S3 server)."""
        argv = [self.binary, "copy", source, f"dst:{bucket}",
                "--transfers", str(self.transfers), "--checkers", str(self.transfers),
                "--s3-no-check-bucket", "--stats", "0", "--log-level", "NOTICE"]
        result = run_process(argv, cwd=self.dir, env=self.env, log=self.dir / f"{label}.log",
                             servers=self.servers, timeout_s=timeout_s, source=source_server)
        if result.exit_code == 0:
            result.log.unlink(missing_ok=True)
        return result


def run_raw_probe(workdir: Path, servers: Servers, root: Path, bucket: str, workers: int, label: str,
                  timeout_s: float = 3600) -> ProcessResult:
    """:mod:`bench.raw_probe` uploading every file under ``root`` from local disk."""
    log_dir = workdir / "raw"
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.raw_probe", "--endpoint", servers.s3_url, "--bucket", bucket,
            "--root", str(root), "--workers", str(workers)]
    result = run_process(argv, cwd=REPO, env=base_env(servers), log=log_dir / f"{label}.log", servers=servers,
                         timeout_s=timeout_s)
    if result.exit_code == 0:
        result.log.unlink(missing_ok=True)
    return result
