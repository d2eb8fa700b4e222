"""FTP trees that used to hang or sink a job (issue 10, items 10 and 11), through the CLI.

Symbolic-link loops on a real pyftpdlib server (which follows links): two links to the
parent folder, a link to a sibling folder and a link to a file. And a file whose name
is not UTF-8 (the server sends the raw bytes): that file is ``failed`` with the reason,
the rest lands.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from module_system.testing import FtpServer
from tests.e2e.helpers import Project, list_keys

def landed(s3, bucket: str) -> list[str]:  # noqa: ANN001
    """The landed files' names relative to the service's prefix (whatever the prefix rule)."""
    keys = [k for k in list_keys(s3, bucket) if not k.startswith("_manifests/")]
    return sorted(k.split("/validated/", 1)[-1] for k in keys)


def loop_tree(root: Path) -> None:
    out = root / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.csv").write_text("a,b\n1,2\n")
    (out / "sub" / "b.csv").write_text("a,b\n3,4\n")
    os.symlink("..", out / "sub" / "up")    # back to out/: the tree would be infinite
    os.symlink("..", out / "sub" / "up2")   # twice: it would grow exponentially
    os.symlink("sub", out / "zlink")        # a sibling folder seen twice
    os.symlink("a.csv", out / "zz.csv")     # a file seen twice


@pytest.fixture()
def loop_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FtpServer]:
    root = tmp_path / "ftproot"
    loop_tree(root)
    server = FtpServer(root, use_mlsd=request.param)
    yield server
    server.stop()


def run(project: Project, bucket: str, server: FtpServer) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    project.write_ftp_registry(bucket, server, "/out", service_id="loops",
                               retry={"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.1})
    batch = project.write_batch([{"job_id": "loops_1", "service_id": "loops"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json", timeout=90)
    return result.returncode, result.stderr, project.report()["jobs"][0]


@pytest.mark.parametrize("loop_server", [True], indirect=True, ids=["mlsd"])
def test_symlink_loops_are_walked_once(project: Project, s3, bucket: str, loop_server: FtpServer) -> None:  # noqa: ANN001
    code, err, job = run(project, bucket, loop_server)
    assert code == 0, err
    assert job["status"] == "succeeded"
    # by the server's `unique` fact: each folder and each file once, under its shallowest name
    assert landed(s3, bucket) == ["a.csv", "sub/b.csv"]
    assert job["files"]["uploaded"] == 2


@pytest.mark.parametrize("loop_server", [False], indirect=True, ids=["nlst"])
def test_symlink_loops_without_mlsd_end(project: Project, s3, bucket: str, loop_server: FtpServer) -> None:  # noqa: ANN001
    code, err, job = run(project, bucket, loop_server)
    assert code == 0, err
    # no identity: a folder listing like an ancestor's is a loop; a sibling link is a copy
    assert landed(s3, bucket) == ["a.csv", "sub/b.csv", "zlink/b.csv", "zz.csv"]


def test_names_that_are_not_utf8_land_under_safe_keys(project: Project, s3, bucket: str,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    """A Latin-1 server: the listing no longer fails; each file lands under a safe, stable key."""
    root = tmp_path / "ftproot"
    (root / "out").mkdir(parents=True)
    (root / "out" / "ok.csv").write_text("a,b\n1,2\n")
    out = os.fsencode(root / "out")
    with open(os.path.join(out, b"caf\xe9.csv"), "wb") as fh:
        fh.write(b"a,b\n3,4\n")
    os.mkdir(os.path.join(out, b"d\xfcr"))
    with open(os.path.join(out, b"d\xfcr", b"in.csv"), "wb") as fh:
        fh.write(b"a,b\n5,6\n")
    server = FtpServer(root)
    server._server.handler.unicode_errors = "surrogateescape"  # send names as the bytes on disk
    try:
        code, err, job = run(project, bucket, server)
        again, _, job2 = run(project, bucket, server)
    finally:
        server.stop()
    assert code == 0, err
    assert "UnicodeDecodeError" not in err
    names = landed(s3, bucket)
    assert len(names) == 3 and "ok.csv" in names, names
    assert any(re.fullmatch(r"caf_~[0-9a-f]{8}\.csv", n) for n in names), names
    assert any(re.fullmatch(r"d_r/in~[0-9a-f]{8}\.csv", n) for n in names), names
    assert job["files"]["uploaded"] == 3
    assert again == 0 and landed(s3, bucket) == names, "the same keys on every run"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/loops/loops_1.json")["Body"].read())
    uris = sorted(f["source_uri"].rsplit("/out/", 1)[1] for f in manifest["files"])
    assert uris == ["caf\\xe9.csv", "d\\xfcr/in.csv", "ok.csv"]
    body = s3.get_object(Bucket=bucket, Key=next(k for k in list_keys(s3, bucket) if "caf_~" in k))["Body"].read()
    assert body == b"a,b\n3,4\n"
