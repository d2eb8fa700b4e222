"""One FTP job downloading several files at once (``transfers``), through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from module_system.testing import FtpServer
from tests.e2e.helpers import Project, list_keys

#: The listing order: breadth first, a folder's files in name order, then its sub-folders' files.
LISTED = ["a_big.csv", "b.csv", "c.csv", "d.csv", "e.csv", "f.csv", "sub/g.csv", "sub/h.csv"]


def test_a_job_with_four_transfers_downloads_on_four_sessions_and_keeps_listing_order(
        project: Project, s3, bucket: str, tmp_path: Path) -> None:  # noqa: ANN001
    root = tmp_path / "ftproot"
    (root / "out" / "sub").mkdir(parents=True)
    for name in LISTED:
        # The first file is much larger: it lands after files listed behind it.
        rows = 40_000 if name == "a_big.csv" else 2
        (root / "out" / name).write_text("id,amount\n" + "".join(f"{i},{i}.5\n" for i in range(rows)))
    # The first four RETRs wait for each other: the run only gets past them with four at once.
    with FtpServer(root, hold_retrs=4) as server:
        project.write_ftp_registry(bucket, server, "/out", service_id="par", transfers=4)
        batch = project.write_batch([{"job_id": "par_1", "service_id": "par"}])
        result = project.run("--batch-file", str(batch), "--report", "report.json")
        held, logins, peak = server.held_together, server.commands.count("USER"), server.peak_sessions
    assert result.returncode == 0, result.stderr[-3000:]
    assert held is True, "four downloads were in flight at once"
    assert logins == peak == 4, "one session per transfer (the default cap is 4), reused for the next files"
    assert project.report()["jobs"][0]["files"]["uploaded"] == len(LISTED)
    assert len(list_keys(s3, bucket, "data/")) == len(LISTED)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/par/par_1.json")["Body"].read())
    assert [f["source_uri"].split("/out/", 1)[1] for f in manifest["files"]] == LISTED
