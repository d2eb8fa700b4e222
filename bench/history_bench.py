"""The run history's cost: dataset C (2,000 JSON files of ~20 KB, FTP -> S3, one job, validated
against the order schema) with and without the history, the same run, interleaved.

    python bench/history_bench.py                # 5 repeats of each
    python bench/history_bench.py --repeat 9 --quick

``with``: the default, the run recorded in the state dir's SQLite history database (one
``--state-dir`` for every run, its database made by an untimed warm-up run, as a cron job's state
dir holds it after its first run: 2,000 file rows, the run, job and event rows per run).
``without``: the same with ``--no-history``. Each run goes into a fresh
bucket and is checked (every file landed with its size). Prints each pair's ratio
wall(with) / wall(without) and the median; the target is under 1.05 (issue 15). Servers and
client share the machine's CPUs: run it on a quiet machine, and read the median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/history_bench.py` from anywhere

from bench import datasets as ds
from bench.clients import ModuleSystemClient
from bench.measure import Servers, verify_landing

TARGET = 1.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="160 files instead of 2,000 (a smoke run)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/module_system_bench"))
    parser.add_argument("--max-workers", type=int, default=8)
    args = parser.parse_args(argv)

    ftp_root = args.workdir / "ftp_root"
    ftp_root.mkdir(parents=True, exist_ok=True)
    data = ds.ensure(ds.specs(args.quick, 256)["C"], ftp_root)
    ds.ensure_flat(data)
    expected = {Path(rel).name: size for rel, size in data.sizes.items()}
    state = args.workdir / "history_bench"
    shutil.rmtree(state, ignore_errors=True)
    with_history = ["--state-dir", str(state)]
    print(f"dataset C: {len(data.sizes)} files, {data.total_bytes / 1e6:.1f} MB; history {state / 'history.sqlite3'}",
          flush=True)

    walls: dict[str, list[float]] = {"with": [], "without": []}
    cpus: dict[str, list[float]] = {"with": [], "without": []}
    with Servers(ftp_root) as servers:
        client = ModuleSystemClient(args.workdir / "history_runs", servers, {"C": data}, args.max_workers)
        s3 = servers.client()
        # Warm-up (not timed): caches, byte-compiled modules, and the history database's schema.
        for label, extra in (("warmup", with_history),):
            s3.create_bucket(Bucket="history-warmup")
            client.run("C", "history-warmup", label, extra=extra)
            client.discard(label)
        for repeat in range(args.repeat):
            order = ("with", "without") if repeat % 2 == 0 else ("without", "with")
            for variant in order:
                bucket = f"history-{variant}-{repeat}-{int(time.time())}"
                s3.create_bucket(Bucket=bucket)
                label = f"{variant}_{repeat}"
                result, report = client.run("C", bucket, label, extra=with_history if variant == "with" else
                                            [*with_history, "--no-history"])
                ok, note = verify_landing(s3, bucket, client.prefix("C"), expected)
                if not ok or result.exit_code != 0:
                    print(f"{label}: run not verified (exit {result.exit_code}): {note}", flush=True)
                    return 1
                walls[variant].append(result.wall_s)
                cpus[variant].append(result.cpu_s)
                print(f"{label}: {result.wall_s:.2f} s (CPU {result.cpu_s:.2f} s), "
                      f"{report['totals']['files']['uploaded']} files", flush=True)
                client.discard(label)
                servers.reset()
    ratios = [w / wo for w, wo in zip(walls["with"], walls["without"], strict=True)]
    median = statistics.median(ratios)
    print()
    print(f"with history    median {statistics.median(walls['with']):.2f} s  ({', '.join(f'{w:.2f}' for w in walls['with'])})")
    print(f"without history median {statistics.median(walls['without']):.2f} s  "
          f"({', '.join(f'{w:.2f}' for w in walls['without'])})")
    of_medians = statistics.median(walls["with"]) / statistics.median(walls["without"])
    print(f"ratio with/without, per pair: median {median:.3f} ({', '.join(f'{r:.3f}' for r in ratios)}); "
          f"of the medians {of_medians:.3f}; target < {TARGET}: {'met' if max(median, of_medians) < TARGET else 'not met'}")
    print(f"client CPU: median {statistics.median(cpus['with']):.2f} s with, {statistics.median(cpus['without']):.2f} s "
          "without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
