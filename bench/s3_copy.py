"""The S3 -> S3 row: one ``type: s3`` job against ``rclone copy`` between two S3 remotes.

Before every run (not timed) the source bucket is filled with dataset A's files (1,000 CSV
objects of ~100 KB; ``--quick``: 80) on the bench's S3 server (moto); the run then copies
them into a fresh bucket of the same server:

* ``module_system``: one job of a ``type: s3`` service reading the source bucket, the
  service's defaults (``transfers``, no ``limits``), ``validate.csv`` with A's columns and
  types, through the CLI;
* ``rclone``: ``rclone copy s3src:<source> dst:<bucket>``, two remotes of type s3 on the same
  endpoint (a download and an upload per object: rclone copies server-side only within one
  remote), ``--transfers 8 --checkers 8`` as in the FTP rows; no validation.

Checked: every object landed once, with its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import datasets as ds
from bench.datasets import CSV_COLUMNS, CSV_TYPES
from bench.measure import Sample, verify_landing
from bench.rows import CliRun, Row, RowContext, destination, file_totals, to_row_sample

__all__ = ["S3CopyRow"]

SOURCE_BUCKET = "bench-s3-source"


class S3CopyRow(Row):
    name = "S3"
    clients = ("module_system", "rclone")

    def __init__(self, ctx: RowContext) -> None:
        super().__init__(ctx)
        self.data = ds.ensure(ds.specs(ctx.quick, None)["A"], ctx.workdir / "ftp_root")
        self.files = sorted(p for p in ds.ensure_flat(self.data).iterdir())

    @property
    def measured(self) -> tuple[str, ...]:
        return self.clients if self.ctx.rclone is not None else ("module_system",)

    def seed(self) -> None:
        """The source bucket, filled with the data set's files (not timed)."""
        s3 = self.ctx.servers.client()
        s3.create_bucket(Bucket=SOURCE_BUCKET)

        def put(path: Path) -> None:
            s3.put_object(Bucket=SOURCE_BUCKET, Key=path.name, Body=path.read_bytes())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, self.files))

    def run(self, client: str, repeat: int, wrap: Sequence[str] = ()) -> Sample:
        self.seed()
        s3 = self.ctx.servers.client()
        bucket = f"bench-s3-{client.replace('_', '-')}-{repeat}"
        s3.create_bucket(Bucket=bucket)
        expected = self.data.by_basename()
        label = f"{client}-{repeat}"
        if client == "module_system":
            cli = CliRun(self.dir, label, self.registry(), [{"job_id": "copy_all", "service_id": "bench_s3"}])
            result, report = cli.run(self.ctx.servers, {"BENCH_BUCKET": bucket}, wrap=wrap,
                                     source=self.ctx.servers.s3)
            files = file_totals(report)
            ok, note = verify_landing(s3, bucket, "data/s3/bench_s3/validated/", expected)
            ok = ok and result.exit_code == 0 and files.get("uploaded") == len(expected)
            if ok:
                cli.discard()
        else:
            assert self.ctx.rclone is not None
            result = self.ctx.rclone.run(f"s3src:{SOURCE_BUCKET}", bucket, f"s3-{label}",
                                         source_server=self.ctx.servers.s3)
            ok, note = verify_landing(s3, bucket, "", expected)
            ok = ok and result.exit_code == 0
        return to_row_sample(result, self.name, client, repeat, len(expected), self.data.total_bytes, ok, note)

    def registry(self) -> dict[str, object]:
        return {"version": 1, "defaults": {"destination": destination()}, "services": {"bench_s3": {
            "type": "s3",
            "source": {"bucket": SOURCE_BUCKET, "endpoint_url": "${S3_URL}", "region": "us-east-1"},
            "validate": {"csv": {"columns": list(CSV_COLUMNS), "types": CSV_TYPES}},
        }}}
