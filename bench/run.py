"""The benchmark suite: module_system the way users run it, against rclone, a raw boto3 probe,
Scrapy and a plain requests pool, on local servers.

    python bench/run.py                          # everything: A, B (4 x 256 MiB), C, S3, WEB, API, SCALE; 3 repeats
    python bench/run.py --quick                  # small sizes, 1,000 no-op jobs: a smoke run
    python bench/run.py --datasets A,C --rows WEB --repeat 5 --profile A,WEB
    python bench/run.py --datasets "" --rows SCALE --overhead-jobs 0      # one row alone
    python bench/run.py --datasets B --big-mb 1024 --repeat 1 --rows "" --overhead-jobs 0
    python bench/run.py --repeat 1 --experiments --rows "" --overhead-jobs 0   # without validation; 1 ms GIL switch

Starts the S3 server (moto) and the FTP server (pyftpdlib) of ``module_system.testing``,
each in a process of its own; builds the datasets once under ``--workdir`` (see
:mod:`bench.datasets`); byte-compiles the packages. Then, FTP -> S3, for each dataset after
one unrecorded warm-up transfer, ``--repeat`` times, interleaved: the module_system CLI in
the single-job shape (``module_system``: one job over the dataset's flat folder, the
service's defaults) and in the split shape (``ms_split``: one job per sub-folder,
``limits.max_connections`` raised to ``--max-workers``), ``rclone copy`` and the raw probe,
each into a fresh bucket, each checked (every file landed with its size). After each
single-job run of A it runs the same batch again on the same bucket (``skipped_same``) and
once more with ``incremental: true`` (``skipped_unchanged``). Then the rows of ``--rows``
(:mod:`bench.s3_copy`, :mod:`bench.web_bench`, :mod:`bench.api_bench`,
:mod:`bench.scale_bench`), each with its own clients in rotation. Then N jobs of a no-op
module measure the framework's cost per job. Prints medians and ratios, the targets, and
writes every sample to ``<workdir>/results/last.json``; a target is met when every repeat
meets it. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/run.py` from anywhere

from bench import datasets as ds
from bench.clients import (
    ModuleSystemClient,
    RcloneClient,
    rclone_missing_message,
    run_raw_probe,
)
from bench.hotspots import print_summary
from bench.measure import (
    ProcessResult,
    Sample,
    Servers,
    tail,
    to_sample,
    verify_landing,
)
from bench.overhead import run_manifest_probe, run_noop
from bench.report import evaluate_targets, print_table, summarise, write_results
from bench.rows import Row, RowContext
from bench.servers import REPO

CLIENTS = ("module_system", "ms_split", "rclone", "raw")
EXPERIMENTS = ("ms_no_validate", "ms_switch_1ms")
FTP_SETS = ("A", "B", "C")


def _row_classes() -> dict[str, type[Row]]:
    from bench.api_bench import ApiRow
    from bench.s3_copy import S3CopyRow
    from bench.scale_bench import ScaleRow
    from bench.sql_bench import SqlRow
    from bench.web_bench import WebRow

    return {row.name: row for row in (S3CopyRow, WebRow, ApiRow, ScaleRow, SqlRow)}


ROWS = ("S3", "WEB", "API", "SCALE", "SQL")


class Bench:
    """One invocation: servers, clients, and the samples gathered."""

    def __init__(self, args: argparse.Namespace, workdir: Path, sets: dict[str, ds.Dataset], servers: Servers) -> None:
        self.args, self.workdir, self.sets, self.servers = args, workdir, sets, servers
        self.s3 = servers.client()
        runs = workdir / "runs"
        self.ms = ModuleSystemClient(runs, servers, sets, args.max_workers)
        self.rclone = RcloneClient(runs, servers, args.max_workers) if rclone_missing_message() is None else None
        self.samples: list[Sample] = []
        self._rows: dict[str, Row] = {}

    def bucket(self, dataset: str, client: str, repeat: int) -> str:
        name = f"bench-{dataset}-{client}-{repeat}".lower().replace("_", "-")
        self.s3.create_bucket(Bucket=name)
        return name

    def record(self, sample: Sample, total: int) -> None:
        self.samples.append(sample)
        print(f"  [{sample.repeat + 1}/{total}] {sample.dataset} {sample.client:<21} {sample.wall_s:8.2f} s "
              f"{sample.mb_s:8.1f} MB/s {sample.files_s:8.1f} files/s  RSS {sample.peak_rss_mb:6.0f} MB  "
              f"CPU {sample.cpu_s:6.1f} s  S3 srv {sample.s3_cpu_s:6.1f} s  other {sample.other_cpu_s:5.1f} s  "
              f"{'ok' if sample.ok else 'FAILED'}  {sample.note}", flush=True)
        if not sample.ok:
            print("    (see the logs under " + str(self.workdir / "runs") + ")", flush=True)

    def _ms_sample(self, name: str, client: str, repeat: int, bucket: str, **how: Any) -> tuple[Sample, dict[str, Any]]:
        """One module_system CLI run of dataset ``name`` into ``bucket``, checked: every file under the valid prefix."""
        data, label = self.sets[name], f"{name}-{client}-{repeat}"
        expected = data.by_basename()
        result, report = self.ms.run(name, bucket, label, **how)
        files = report.get("totals", {}).get("files", {})
        ok, note = verify_landing(self.s3, bucket, self.ms.prefix(name), expected)
        ok = ok and result.exit_code == 0 and files.get("uploaded") == len(expected)
        if result.exit_code != 0:
            note += f"; exit {result.exit_code}: {tail(result.log, 400)!r}"
        if ok:
            self.ms.discard(label)
        sample = to_sample(result, name, client, repeat, len(expected), data.total_bytes, ok, note,
                           file_statuses=files)
        return sample, report

    def run_module_system(self, name: str, repeat: int) -> None:
        """The single-job shape: one job over the flat folder, service defaults; then the re-runs."""
        data, bucket = self.sets[name], self.bucket(name, "ms", repeat)
        expected, prefix = data.by_basename(), self.ms.prefix(name)
        sample, _ = self._ms_sample(name, "module_system", repeat, bucket, shape="single")
        self.record(sample, self.args.repeat)
        if name in self.args.rerun:
            for client, variant, status in (("ms_rerun_same", "plain", "skipped_same"),
                                            ("ms_rerun_incremental", "incremental", "skipped_unchanged")):
                label = f"{name}-{client}-{repeat}"
                again, report = self.ms.run(name, bucket, label, shape="single", variant=variant)
                files = report.get("totals", {}).get("files", {})
                ok, note = verify_landing(self.s3, bucket, prefix, expected)
                ok = ok and again.exit_code == 0 and files.get(status) == len(expected)
                if ok:
                    self.ms.discard(label)
                self.record(to_sample(again, name, client, repeat, len(expected), data.total_bytes, ok,
                                      f"{files.get(status)} {status}; {note}", file_statuses=files),
                            self.args.repeat)
        self.servers.reset()

    def run_ms_split(self, name: str, repeat: int) -> None:
        """The split shape: one job per sub-folder, ``limits.max_connections`` raised to the worker count."""
        sample, _ = self._ms_sample(name, "ms_split", repeat, self.bucket(name, "ms-split", repeat), shape="split")
        self.record(sample, self.args.repeat)
        self.servers.reset()

    def run_experiment(self, name: str, repeat: int, client: str, **how: Any) -> None:
        """module_system (single-job shape) with one thing changed (``--experiments``); checked like the real run."""
        sample, _ = self._ms_sample(name, client, repeat, self.bucket(name, client, repeat), shape="single", **how)
        self.record(sample, self.args.repeat)
        self.servers.reset()

    def run_ms_no_validate(self, name: str, repeat: int) -> None:
        self.run_experiment(name, repeat, "ms_no_validate", variant="no_validate")

    def run_ms_switch_1ms(self, name: str, repeat: int) -> None:
        self.run_experiment(name, repeat, "ms_switch_1ms", switch_interval=0.001)

    def run_rclone(self, name: str, repeat: int) -> None:
        assert self.rclone is not None
        rclone = self.rclone
        self._run_reference(name, repeat, "rclone",
                            lambda data, bucket, label: rclone.run(f"src:{data.flat_root.name}", bucket, label))

    def run_raw(self, name: str, repeat: int) -> None:
        self._run_reference(name, repeat, "raw", lambda data, bucket, label: run_raw_probe(
            self.workdir / "runs", self.servers, data.flat_root, bucket, self.args.max_workers, label))

    def _run_reference(self, name: str, repeat: int, client: str,
                       run: Callable[[ds.Dataset, str, str], ProcessResult]) -> None:
        """One run of a reference client (rclone, the raw probe) into a fresh bucket, checked and recorded."""
        data, bucket = self.sets[name], self.bucket(name, client, repeat)
        result = run(data, bucket, f"{name}-{client}-{repeat}")
        ok, note = verify_landing(self.s3, bucket, "", data.by_basename())
        if result.exit_code != 0:
            ok, note = False, note + f"; exit {result.exit_code}: {tail(result.log, 400)!r}"
        self.record(to_sample(result, name, client, repeat, len(data.sizes), data.total_bytes, ok, note),
                    self.args.repeat)
        self.servers.reset()

    def warm_up(self, name: str) -> None:
        """One unrecorded raw-probe transfer of dataset ``name`` before its measured ones.

        A server's first transfer of a dataset after other work pays for growing its memory
        again (moto holds the uploaded objects and parts in the server process): in runs
        that went repeat by repeat through A, B and C, the first B transfer of every repeat
        cost the S3 server 8.8-11.2 CPU-s against 7.4-9.0 for the other two, whichever
        client it was. So each dataset's repeats run back to back after one warm-up.
        """
        data = self.sets[name]
        bucket = self.bucket(name, "warmup", 0)
        result = run_raw_probe(self.workdir / "runs", self.servers, data.flat_root, bucket, self.args.max_workers,
                               f"{name}-warmup")
        print(f"  warm-up {name}: {result.wall_s:.2f} s (raw probe, not recorded)", flush=True)
        self.servers.reset()

    def transfers(self) -> None:
        clients = [c for c in CLIENTS if c != "rclone" or self.rclone is not None]
        if self.args.experiments:
            clients += list(EXPERIMENTS)
        for name in self.sets:
            if self.args.repeat:
                self.warm_up(name)
            for repeat in range(self.args.repeat):
                order = clients[repeat % len(clients):] + clients[:repeat % len(clients)]  # no client always first
                for client in order:
                    getattr(self, f"run_{client}")(name, repeat)

    def rows(self) -> None:
        """The rows of ``--rows``: each prepared once, its clients ``--repeat`` times in rotation."""
        for name in self.args.rows:
            row = self.row(name)
            clients = row.measured
            print(f"row {name}: clients {', '.join(clients)}", flush=True)
            for repeat in range(self.args.repeat):
                order = clients[repeat % len(clients):] + clients[:repeat % len(clients)]
                for client in order:
                    sample = row.run(client, repeat)
                    self.record(sample, self.args.repeat)
                    if not sample.ok:
                        print(f"    (see {row.dir})", flush=True)
                    self.servers.reset()

    def row(self, name: str) -> Row:
        """Row ``name``, prepared (data built, its servers started), kept for the profiles."""
        if name not in self._rows:
            row = _row_classes()[name](RowContext(self.workdir, self.servers, self.rclone, self.args.quick))
            t0 = time.perf_counter()
            row.prepare()
            print(f"row {name} prepared in {time.perf_counter() - t0:.1f} s", flush=True)
            self._rows[name] = row
        return self._rows[name]

    def overhead(self) -> float | None:
        """Median framework overhead per no-op job (ms: wall per job minus a plain PUT), or None when not run."""
        jobs = self.args.overhead_jobs
        if jobs <= 0:
            return None
        per_job = []
        for repeat in range(self.args.overhead_repeat):
            for count in (1, jobs):
                sample = run_noop(self.workdir / "runs", self.servers, count, self.args.overhead_workers, repeat,
                                  f"bench-noop-{count}-{repeat}")
                self.record(sample, self.args.overhead_repeat)
                self.servers.reset()
                if count == jobs:
                    base = next(s for s in reversed(self.samples) if s.client == "noop_1")
                    probe = run_manifest_probe(self.servers, jobs, self.args.overhead_workers,
                                               f"bench-probe-{jobs}-{repeat}", int(sample.extra["manifest_bytes"]))
                    self.servers.reset()
                    extra = sample.extra
                    extra["ms_per_job_minus_startup"] = round((sample.wall_s - base.wall_s) * 1000 / jobs, 4)
                    extra["client_cpu_ms_per_job"] = round((sample.cpu_s - base.cpu_s) * 1000 / jobs, 4)
                    extra["s3_server_cpu_ms_per_job"] = round(sample.s3_cpu_s * 1000 / jobs, 4)
                    extra["probe_ms_per_put"] = round(probe["seconds"] * 1000 / jobs, 4)
                    extra["probe_cpu_ms_per_put"] = round(probe["cpu_s"] * 1000 / jobs, 4)
                    extra["overhead_ms_per_job"] = round(extra["ms_per_job_minus_startup"] - extra["probe_ms_per_put"], 4)
                    print(f"    {jobs} no-op jobs: {extra['ms_per_job']:.3f} ms/job wall, "
                          f"{extra['ms_per_job_minus_startup']:.3f} ms/job without start-up "
                          f"(1 job: {base.wall_s:.2f} s); client CPU {extra['client_cpu_ms_per_job']:.3f} "
                          f"ms/job, S3 server CPU {extra['s3_server_cpu_ms_per_job']:.3f} ms/job; "
                          f"plain boto3, {jobs} manifest PUTs from {self.args.overhead_workers} threads: "
                          f"{extra['probe_ms_per_put']:.3f} ms/PUT wall ({extra['probe_cpu_ms_per_put']:.3f} ms CPU) "
                          f"-> framework overhead {extra['overhead_ms_per_job']:.3f} ms/job", flush=True)
                    per_job.append(extra["overhead_ms_per_job"])
        return sorted(per_job)[len(per_job) // 2] if per_job else None

    def profile(self, name: str) -> dict[str, Any] | None:
        """One more module_system run of ``name`` (a dataset, or NOOP) under py-spy, not timed; its hotspots.

        ``--gil`` samples only the thread holding the GIL: where the interpreter's one
        core goes, which is what limits a client whose threads share it.
        """
        spy = shutil.which("py-spy")
        if spy is None:
            print("py-spy is not installed (pip install py-spy): no profile", flush=True)
            return None
        out = self.workdir / "results" / f"profile_{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        wrap = [spy, "record", "--format", "raw", "--rate", "250", "--gil", "--nonblocking", "-o", str(out), "--"]
        if name == "NOOP":
            jobs = self.args.profile_noop_jobs
            sample = run_noop(self.workdir / "runs", self.servers, jobs, self.args.overhead_workers, 0,
                              "bench-noop-profile", wrap=wrap)
            wall, code = sample.wall_s, sample.exit_code
        elif name in ROWS:
            sample = self.row(name).run("module_system", 99, wrap=wrap)
            wall, code = sample.wall_s, sample.exit_code
        else:
            result, _ = self.ms.run(name, self.bucket(name, "profile", 0), f"{name}-profile", wrap=wrap)
            wall, code = result.wall_s, result.exit_code
        self.servers.reset()
        print(f"\nprofiled module_system on {name}: {wall:.2f} s under py-spy (exit {code})")
        return print_summary(out) if out.exists() else None


def _meta(args: argparse.Namespace, sets: dict[str, ds.Dataset], rclone: str | None) -> dict[str, Any]:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=20, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    def version(package: str) -> str:
        try:
            return installed(package)
        except PackageNotFoundError:
            return "missing"

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "command": " ".join(sys.argv), "args": {k: v for k, v in vars(args).items() if k != "workdir"},
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "cpu": cpu, "platform": platform.platform(),
                    "python": platform.python_version()},
        "versions": {p: version(p) for p in ("boto3", "botocore", "moto", "pyftpdlib", "jsonschema", "requests",
                                                   "scrapy", "lxml")} | {
            "rclone": rclone or "missing"},
        "git": {"commit": run("git", "rev-parse", "--short", "HEAD"), "dirty": bool(run("git", "status", "--porcelain"))},
        "datasets": {n: {"folder": d.root.name, "files": len(d.sizes), "bytes": d.total_bytes} for n, d in sets.items()},
        "rows": args.rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--datasets", default="A,B,C", help="FTP -> S3 datasets, a subset of A,B,C; '' for none [A,B,C]")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"the other rows, a subset of {','.join(ROWS)}; '' for none [{','.join(ROWS)}]")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each client per dataset [3]")
    parser.add_argument("--quick", action="store_true", help="small datasets and 1,000 no-op jobs")
    parser.add_argument("--big-mb", type=int, default=None, help="MiB per file of dataset B [256; quick 16]")
    parser.add_argument("--max-workers", type=int, default=8,
                        help="module_system --max-workers, rclone --transfers/--checkers, raw probe threads [8]")
    parser.add_argument("--rerun", default="A", help="datasets whose first run is re-run (skipped_same, incremental) [A]")
    parser.add_argument("--overhead-jobs", type=int, default=None, help="no-op jobs [10000; quick 1000; 0 skips]")
    parser.add_argument("--overhead-workers", type=int, default=20, help="--max-workers of the no-op batch [20]")
    parser.add_argument("--overhead-repeat", type=int, default=1, help="runs of the no-op batch [1]")
    parser.add_argument("--experiments", action="store_true",
                        help="also run module_system without validation, and with a 1 ms GIL switch interval")
    parser.add_argument("--profile", default="",
                        help="datasets or rows to profile once more under py-spy (GIL holder sampled), e.g. A,WEB,NOOP")
    parser.add_argument("--profile-noop-jobs", type=int, default=2000, help="no-op jobs of the NOOP profile [2000]")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "module_system_bench",
                        help="datasets (reused), run directories and results [$TMPDIR/module_system_bench]")
    args = parser.parse_args(argv)
    args.datasets = [d.strip().upper() for d in args.datasets.split(",") if d.strip()]
    args.rerun = [d.strip().upper() for d in args.rerun.split(",") if d.strip()]
    args.profile = [d.strip().upper() for d in args.profile.split(",") if d.strip()]
    args.rows = [d.strip().upper() for d in args.rows.split(",") if d.strip()]
    unknown = (set(args.profile) - {*FTP_SETS, *ROWS, "NOOP"} or set(args.datasets) - set(FTP_SETS)
               or set(args.rows) - set(ROWS))
    if unknown or args.repeat < 0:
        parser.error(f"unknown datasets {sorted(unknown)}" if unknown else "--repeat must be 0 or more")
    if args.overhead_jobs is None:
        args.overhead_jobs = 1000 if args.quick else 10_000
    return args


def precompile() -> None:
    """Byte-compile the repository's packages, as ``pip install`` does for a wheel.

    An editable install compiles a module on first import and caches it, unless
    ``PYTHONDONTWRITEBYTECODE`` is set (some sandboxes and CI images set it): then every
    CLI run would compile module_system's ~60 modules again (~70 ms), a cost no
    installed copy pays. ``compileall`` writes the caches whatever that variable says.
    """
    for package in ("common", "orchestrator", "modules", "module_system", "bench", "examples"):
        compileall.compile_dir(str(REPO / package), quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    precompile()
    workdir: Path = args.workdir
    ftp_root = workdir / "ftp_root"
    ftp_root.mkdir(parents=True, exist_ok=True)
    wanted = ds.specs(args.quick, args.big_mb)
    sets = {}
    for name in sorted(set(args.datasets) | set(args.profile) & set(FTP_SETS)):
        t0 = time.perf_counter()
        sets[name] = ds.ensure(wanted[name], ftp_root)
        ds.ensure_flat(sets[name])
        print(f"dataset {name}: {sets[name].root} ({len(sets[name].sizes)} files, "
              f"{sets[name].total_bytes / 1e6:.1f} MB; ready in {time.perf_counter() - t0:.1f} s)", flush=True)
    missing = rclone_missing_message()
    if missing:
        print(missing, flush=True)
    rclone_version = None if missing else subprocess.run(["rclone", "version"], capture_output=True, text=True,
                                                         check=False).stdout.splitlines()[0]
    meta = _meta(args, sets, rclone_version)
    print(f"machine: {meta['machine']['cpus']} CPUs ({meta['machine']['cpu']}), Python {meta['machine']['python']}; "
          f"servers and clients share them", flush=True)
    with Servers(ftp_root) as servers:
        bench = Bench(args, workdir, {n: sets[n] for n in args.datasets}, servers)
        print(f"servers: S3 {servers.s3_url} (pid {servers.s3.proc.pid}), FTP {servers.ftp.info['host']}:"
              f"{servers.ftp.info['port']} (pid {servers.ftp.proc.pid})", flush=True)
        bench.transfers()
        bench.rows()
        noop_ms = bench.overhead()
        profiles = {}
        if args.profile:
            bench.ms = ModuleSystemClient(workdir / "runs", servers, sets, args.max_workers)
            bench.sets = sets
            profiles = {name: bench.profile(name) for name in args.profile}
    rows = summarise(bench.samples)
    targets = evaluate_targets(rows, noop_ms)
    print()
    print_table(rows, targets)
    out = workdir / "results" / "last.json"
    meta["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average at start {' '.join(meta['loadavg_at_start'])}, at end {' '.join(meta['loadavg_at_end'])} "
          f"(it counts this benchmark's own threads too; the 'other' column measures competing work)")
    write_results(out, {**meta, "profiles": profiles}, bench.samples, rows, targets)
    stamped = out.with_name(f"run_{meta['started_at'].replace(':', '')}.json")
    shutil.copyfile(out, stamped)
    print(f"\nresults: {out} (and {stamped.name}); datasets kept in {ftp_root}")
    print(json.dumps({"all_runs_verified": all(s.ok for s in bench.samples)}))
    return 0 if all(s.ok for s in bench.samples) else 1


if __name__ == "__main__":
    sys.exit(main())
