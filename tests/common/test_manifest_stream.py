"""The manifest is written to a file one entry at a time: the same document, its size and digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from common.manifest import ManifestEntry, write_manifest
from common.problems import Problem


def test_the_streamed_manifest_is_the_whole_document(tmp_path: Path) -> None:
    files = [ManifestEntry(f"ftp://h/{i}.csv", f"data/{i}.csv", i, "a" * 64, "uploaded", (), {"size": str(i)})
             for i in range(1000)]
    files.append(ManifestEntry("ftp://h/bad.csv", "rejected/bad.csv", 3, "b" * 64, "rejected",
                               (Problem("not a valid int: x", "row 2, column 'id'"),)))
    abandoned = [ManifestEntry("ftp://old/x.csv", "data/x.csv", 1, "c" * 64, "uploaded")]
    head = {"run_id": "r1", "job_id": "j", "status": "succeeded", "error": None, "source": {"host": "h"}}
    path = tmp_path / "m.json"
    size, digest = write_manifest(path, head, iter(files), iter(abandoned))
    body = path.read_bytes()
    assert (size, digest) == (len(body), hashlib.sha256(body).hexdigest())
    assert json.loads(body) == {**head, "files": [f.to_dict() for f in files],
                                "abandoned": [a.to_dict() for a in abandoned]}
    _, _ = write_manifest(path, head, [], [])
    assert json.loads(path.read_bytes()) == {**head, "files": [], "abandoned": []}
