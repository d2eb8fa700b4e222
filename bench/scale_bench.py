"""The scale row: one job over 100,000 small files; peak RSS, and whether it slows down as it goes.

The files: :data:`FILES` CSV files of ~300 bytes (A's typed columns, 5 rows) in one flat
local folder under ``--workdir`` (``--quick``: 5,000), built once and reused while its
marker file matches. The client: the CLI with one job of the example plugin's
``type: localdir`` (the file-source template: the engine runs its listing, downloads,
validation and uploads), the service's defaults (``transfers``, no ``limits``),
``validate.csv`` with A's columns and types.

Figures: peak RSS (``os.wait4``); files per second over the whole run; and files per second
over the first and the last tenth of the files, by the times their PUTs were answered at
the S3 server (``GET /__bench/puts``, see :mod:`bench.servers`: moto's own LastModified has
whole seconds only): ``tenth / (t[tenth] - t[0])`` and ``tenth / (t[N-1] - t[N-1-tenth])``.
A flat ratio (last / first near 1) means the per-file cost does not grow with the files
already done (listing, manifest, key index, log).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import requests

from bench.datasets import CSV_COLUMNS, CSV_TYPES
from bench.measure import Sample, landed
from bench.rows import CliRun, Row, RowContext, destination, file_totals, to_row_sample

__all__ = ["ScaleRow", "tenth_rates"]

FILES, QUICK_FILES = 100_000, 5_000
ROWS_PER_FILE = 5
GENERATOR = 1
PREFIX = "data/localdir/bench_scale/validated/"


def build(folder: Path, count: int) -> int:
    """``count`` small CSV files in ``folder`` (reused when its marker matches); their total bytes."""
    marker = folder.with_name(folder.name + ".manifest.json")
    wanted = {"files": count, "rows": ROWS_PER_FILE, "generator": GENERATOR}
    if marker.exists() and folder.is_dir():
        found = json.loads(marker.read_text())
        if {k: found.get(k) for k in wanted} == wanted and sum(1 for _ in folder.iterdir()) == count:
            return int(found["bytes"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(20261204)
    header = ",".join(CSV_COLUMNS) + "\n"
    total = 0
    for i in range(count):
        rows = "".join(f"{i * ROWS_PER_FILE + r},2024-0{1 + r}-1{r},2024-0{1 + r}-1{r}T10:0{r}:00Z,"
                       f"{rng.uniform(-1000, 1000):.2f},item {rng.randrange(10_000)},{'true' if r % 2 else 'false'}\n"
                       for r in range(ROWS_PER_FILE))
        body = (header + rows).encode()
        (folder / f"s_{i:06d}.csv").write_bytes(body)
        total += len(body)
    marker.write_text(json.dumps({**wanted, "bytes": total}))
    return total


def tenth_rates(times: list[float]) -> tuple[float, float]:
    """Files per second over the first and the last tenth of the sorted landing ``times``."""
    times = sorted(times)
    tenth = max(1, len(times) // 10)
    first = times[tenth] - times[0]
    last = times[-1] - times[-1 - tenth]
    return (tenth / first if first > 0 else float("inf")), (tenth / last if last > 0 else float("inf"))


class ScaleRow(Row):
    name = "SCALE"
    clients = ("module_system",)

    def __init__(self, ctx: RowContext) -> None:
        super().__init__(ctx)
        self.count = QUICK_FILES if ctx.quick else FILES
        self.folder = ctx.workdir / "scale" / f"files_{self.count}"

    def prepare(self) -> None:
        self.bytes = build(self.folder, self.count)

    def run(self, client: str, repeat: int, wrap: Sequence[str] = ()) -> Sample:
        servers = self.ctx.servers
        bucket = f"bench-scale-{repeat}"
        servers.client().create_bucket(Bucket=bucket)
        service = {"type": "localdir", "source": {"path": str(self.folder), "recursive": False},
                   "validate": {"csv": {"columns": list(CSV_COLUMNS), "types": CSV_TYPES}}}
        registry = {"version": 1, "defaults": {"destination": destination()}, "services": {"bench_scale": service}}
        cli = CliRun(self.dir, f"ms-{repeat}", registry, [{"job_id": "all", "service_id": "bench_scale"}])
        requests.post(f"{servers.s3_url}/__bench/puts", timeout=60)
        result, report = cli.run(servers, {"BENCH_BUCKET": bucket}, wrap=wrap, source=servers.s3)
        puts = requests.get(f"{servers.s3_url}/__bench/puts", timeout=120).json()
        times = [t for t, path in puts if f"/{PREFIX}" in path]
        files = file_totals(report)
        objects = landed(servers.client(), bucket)
        ok = (result.exit_code == 0 and files.get("uploaded") == self.count and len(objects) == self.count
              and len(times) == self.count)
        first, last = tenth_rates(times) if len(times) >= 20 else (0.0, 0.0)
        note = (f"{files.get('uploaded')} uploaded, {len(objects)} objects, {len(times)} PUT times; files/s "
                f"first tenth {first:.0f}, last tenth {last:.0f}")
        if ok:
            cli.discard()
        return to_row_sample(result, self.name, "module_system", repeat, self.count, self.bytes, ok, note,
                             file_statuses=files, first_tenth_files_s=round(first, 1),
                             last_tenth_files_s=round(last, 1), tenth_ratio=round(last / first, 3) if first else 0.0)
