"""Compressed files (issue 13, item 2, single-file part): a ``.csv.gz``/``.bz2``/``.xz`` is checked by
the rules of what it holds, streamed, with a bound on the expanded size."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import time
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Project, list_keys

GOOD = b"id,amount\n1,2.5\n2,3.0\n"
BAD = b"id,amount\n1,2.5\n2,lots\n"


def test_compressed_csv_is_checked_by_its_content(project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    files = {
        "good.csv.gz": gzip.compress(GOOD), "good.csv.bz2": bz2.compress(GOOD), "good.csv.xz": lzma.compress(GOOD),
        "bad.csv.gz": gzip.compress(BAD),
        "bomb.csv.gz": gzip.compress(b"id,amount\n" + b"1,2.5\n" * (3 << 20)),  # ~18 MiB expanded, ~20 KB packed
        "broken.csv.gz": gzip.compress(GOOD)[:-12] + b"garbage!",
    }
    old = time.time() - 60
    for name, data in files.items():
        (drop / name).write_bytes(data)
        os.utime(drop / name, (old, old))
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"drop": {"type": "local", "source": {"path": str(drop)},
                              "validate": {"csv": {"columns": ["id", "amount"], "types": {"id": "int", "amount": "float"}},
                                           "max_expanded_mb": 1}}},
    })
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 1, result.stderr[-2000:]
    valid = sorted(k.rsplit("/", 1)[-1] for k in list_keys(s3, bucket, "data/local/drop/validated/"))
    assert valid == ["good.csv.bz2", "good.csv.gz", "good.csv.xz"]

    def errors(name: str) -> list[dict[str, Any]]:
        body = s3.get_object(Bucket=bucket, Key=f"data/local/drop/rejected/{name}.errors.json")["Body"].read()
        return json.loads(body)["errors"]  # type: ignore[no-any-return]

    [problem] = errors("bad.csv.gz")
    assert problem["location"] == "row 3, column 'amount'", problem
    assert "compression bomb" in errors("bomb.csv.gz")[0]["message"]
    assert errors("broken.csv.gz")[0]["message"].startswith("not a valid gz file")
    assert not list(drop.parent.rglob("*.expanded")), "no expanded temp file is left"
