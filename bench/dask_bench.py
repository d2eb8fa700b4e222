"""``--executor threads`` against ``--executor dask-local`` (issue 16), measured in the same run.

    python bench/dask_bench.py                     # 2,000 files, then 10,000 no-op jobs
    python bench/dask_bench.py --files 200 --noop-jobs 1000 --repeat 1   # a smoke run

1. **2,000 files**: 20 jobs of 100 files (~4 KB CSV each, ``validate.csv``), ``type: local``
   source into a ``type: local`` destination (no server in the way: what is measured is the
   executor and the jobs), ``--max-workers 4``; once with ``threads``, once with ``dask-local``
   and ``MODULE_SYSTEM_DASK_WORKERS=2`` (two worker processes of 2 threads). Both through the
   CLI, each a fresh destination folder. Printed: the command's wall time (the Dask one
   includes starting and stopping its LocalCluster) and the run's own time (report
   ``started_at`` to ``finished_at``), and the ratio threads / dask (above 1: Dask faster).
2. **Scheduler overhead per job**: 10,000 no-op jobs (a ``type: local`` source on an empty
   folder, landing a manifest locally: an honest whole job, the smallest one) on both
   executors (and on ``dask://`` to a ``dask scheduler`` with two ``dask worker`` processes of
   10 threads, started by the benchmark), ``--max-workers 20``, LOG_LEVEL=WARNING; the overhead
   per job is ``(run time on dask - run time on threads) / jobs``. Also the executor layer alone:
   10,000 trivial tasks submitted and awaited the same way (20 threads, one task in flight
   each) on the same kind of cluster, per task.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HEADER = "id,date,amount,name\n"
BODY = "".join(f"{i},2026-11-{1 + i % 28:02d},{i * 1.5},name{i}\n" for i in range(150))


def write_files(root: Path, jobs: int, per_job: int) -> None:
    for j in range(jobs):
        folder = root / f"part{j:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_job):
            (folder / f"f{i:04d}.csv").write_text(HEADER + BODY.replace(",name", f",n{j}_{i}_"))


def project(work: Path, name: str, services: dict[str, object], jobs: list[dict[str, object]]) -> tuple[Path, Path]:
    registry = work / f"{name}_registry.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "services": services}))
    batch = work / f"{name}_batch.json"
    batch.write_text(json.dumps({"registry": registry.name, "jobs": jobs}))
    return registry, batch


def run_cli(work: Path, batch: Path, executor: str, max_workers: int, log_level: str) -> tuple[float, float]:
    """(wall of the command, the run's own seconds from its report)."""
    env = {**os.environ, "LOG_LEVEL": log_level, "MODULE_SYSTEM_DASK_WORKERS": "2"}
    report = work / f"report_{batch.stem}_{executor}.json"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch),
                           "--executor", executor, "--max-workers", str(max_workers), "--report", str(report),
                           "--log-format", "json", "--state-dir", str(work / f"state_{executor}")],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{executor} run failed ({done.returncode}): {done.stderr[-2000:]}")
    document = json.loads(report.read_text())
    span = dt.datetime.fromisoformat(document["finished_at"]) - dt.datetime.fromisoformat(document["started_at"])
    return wall, span.total_seconds()


def files_row(work: Path, jobs: int, per_job: int) -> dict[str, float]:
    source = work / "files"
    write_files(source, jobs, per_job)
    out: dict[str, float] = {}
    for executor in ("threads", "dask-local"):
        dest = work / f"landed_{executor}"
        services = {f"s{j:02d}": {"type": "local", "source": {"path": str(source / f"part{j:02d}"), "min_age_s": 0},
                                  "destination": {"type": "local", "path": str(dest)},
                                  "validate": {"csv": {"columns": ["id", "date", "amount", "name"],
                                                       "types": {"id": "int", "date": "date", "amount": "float"}}}}
                    for j in range(jobs)}
        _, batch = project(work, f"files_{executor}", services,
                           [{"job_id": f"j{j:02d}", "service_id": f"s{j:02d}"} for j in range(jobs)])
        out[f"{executor}_wall"], out[f"{executor}_run"] = run_cli(work, batch, executor, 4, "INFO")
        landed = sum(1 for p in dest.rglob("*.csv"))
        if landed != jobs * per_job:
            raise SystemExit(f"{executor}: {landed} files landed, not {jobs * per_job}")
    return out


def noop_row(work: Path, jobs: int) -> dict[str, float]:
    """The no-op batch on threads, dask-local, and a scheduler and two workers of 10 threads started
    as their own processes (``dask scheduler``, ``dask worker``: the client process then holds no
    scheduler)."""
    sys.path.insert(0, str(ROOT))
    from tests.e2e.dask_cluster import DaskCluster

    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    out: dict[str, float] = {}
    with DaskCluster(work / "cluster", {**os.environ, "LOG_LEVEL": "WARNING"}, workers=2, nthreads=10) as cluster:
        for name, executor in (("threads", "threads"), ("dask-local", "dask-local"), ("dask", cluster.url())):
            services = {"noop": {"type": "local", "source": {"path": str(empty)},
                                 "destination": {"type": "local", "path": str(work / f"noop_{name}")}}}
            _, batch = project(work, f"noop_{name}", services,
                               [{"job_id": f"n{i:05d}", "service_id": "noop"} for i in range(jobs)])
            out[f"{name}_wall"], out[f"{name}_run"] = run_cli(work, batch, executor, 20, "WARNING")
    return out


def executor_layer(tasks: int, width: int = 20) -> float:
    """Seconds per trivial task, submitted and awaited by ``width`` threads (one in flight each) on
    a LocalCluster of two worker processes: Dask's own cost per job as the executor uses it."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=10, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.submit(int, 0, pure=False).result()  # warm
        counter = iter(range(tasks))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                client.submit(int, i, key=f"noop-{i}", pure=False).result()

        threads = [threading.Thread(target=work) for _ in range(width)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (time.perf_counter() - t0) / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="files of the batch (20 jobs)")
    parser.add_argument("--noop-jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    jobs = 20
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="dask-bench-") as tmp:
            work = Path(tmp)
            row = files_row(work, jobs, max(1, args.files // jobs))
            print(f"[{rep + 1}] {args.files} files, 20 jobs, --max-workers 4")
            print(f"    threads:    run {row['threads_run']:.2f} s, command {row['threads_wall']:.2f} s")
            print(f"    dask-local: run {row['dask-local_run']:.2f} s, command {row['dask-local_wall']:.2f} s "
                  "(2 worker processes x 2 threads; the command includes the cluster's start and stop)")
            print(f"    ratio threads/dask: run {row['threads_run'] / row['dask-local_run']:.2f}x, "
                  f"command {row['threads_wall'] / row['dask-local_wall']:.2f}x (above 1: dask faster)")
            if args.noop_jobs:
                noop = noop_row(work, args.noop_jobs)
                per_job = (noop["dask-local_run"] - noop["threads_run"]) / args.noop_jobs
                print(f"[{rep + 1}] {args.noop_jobs} no-op jobs (local source, empty folder, manifest landed "
                      "locally), --max-workers 20")
                print(f"    threads: {noop['threads_run']:.2f} s ({noop['threads_run'] * 1e3 / args.noop_jobs:.2f} "
                      f"ms a job); dask-local: {noop['dask-local_run']:.2f} s "
                      f"({noop['dask-local_run'] * 1e3 / args.noop_jobs:.2f} ms a job)")
                print(f"    scheduler overhead: {per_job * 1e3:.2f} ms a job (dask-local minus threads; target < 5 ms)")
                remote = (noop["dask_run"] - noop["threads_run"]) / args.noop_jobs
                print(f"    dask:// (scheduler and 2 workers x 10 threads in processes of their own): "
                      f"{noop['dask_run']:.2f} s ({noop['dask_run'] * 1e3 / args.noop_jobs:.2f} ms a job); "
                      f"overhead {remote * 1e3:.2f} ms a job")
                layer = executor_layer(args.noop_jobs)
                print(f"    executor layer alone (trivial task, 20 submitters): {layer * 1e3:.2f} ms a task")


if __name__ == "__main__":
    main()
