"""The demo: a real run against embedded local servers, no AWS account or network.

    pip install -r requirements.txt && python test_system.py

Starts an S3-compatible server (moto) and an FTP server (pyftpdlib) on 127.0.0.1,
seeds them with sample data (some of it deliberately invalid), runs
``demo_batch_jobs.json`` against ``project_registry.yaml`` through the same code path
as the CLI, prints the live progress and summary, lists where the files landed,
stops every server and exits 0 when the run behaved as expected.

(The name is the contract's; pytest does not collect it: it has no test functions.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEST_BUCKET = "ingest-landing"

GOOD_CSV = "id,date,amount,name\n1,2026-11-01,12.50,alpha\n2,2026-11-02,7,beta\n3,2026-11-03,-3.25,gamma\n"
BAD_CSV = "id,date,amount,name\n1,2026-11-01,12.50,alpha\nx2,2026-13-02,seven,beta\n"
WRONG_HEADER_CSV = "id;date;amount;name\n1;2026-11-01;1.0;a\n"


def seed_ftp(root: Path) -> None:
    files = {
        "outgoing/sales_2026-11-01.csv": GOOD_CSV,
        "outgoing/regions/north/sales_north.csv": GOOD_CSV.replace("alpha", "north"),
        "outgoing/sales_broken.csv": BAD_CSV,
        "outgoing/sales_semicolon.csv": WRONG_HEADER_CSV,
        "outgoing/readme.txt": "not a csv: excluded by include",
        "archive/sales_2026-10-31.csv": GOOD_CSV.replace("alpha", "archived"),
        "mirror/sales_2026-11-01.csv": GOOD_CSV,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def seed_s3(client) -> None:  # noqa: ANN001 - a boto3 client
    client.create_bucket(Bucket="vendor-drop")
    client.create_bucket(Bucket=DEST_BUCKET)
    good = {"account_id": "ACC-0001", "date": "2026-11-01", "amount": 120.5, "currency": "EUR"}
    objects = {
        "financial/2026-11-01/accounts.json": json.dumps(good),
        "financial/2026-11-01/more.json": json.dumps({**good, "account_id": "ACC-0002", "amount": 3}),
        "financial/2026-11-01/bad_amount.json": json.dumps({**good, "amount": "lots", "currency": "XXX"}),
        "financial/2026-11-01/ledger.jsonl": "\n".join(json.dumps({**good, "amount": i}) for i in range(5)) + "\n",
        "financial/2026-11-01/notes.txt": "excluded by include",
    }
    for key, body in objects.items():
        client.put_object(Bucket="vendor-drop", Key=key, Body=body.encode())


def main() -> int:
    from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET, FtpServer, S3Server
    from orchestrator.cli_init import run_batch
    from orchestrator.exit_codes import ExitCode

    workdir = Path(tempfile.mkdtemp(prefix="module-system-demo-"))
    ftp_root = workdir / "ftp"
    seed_ftp(ftp_root)
    print(f"demo: working in {workdir}")
    with S3Server() as s3, FtpServer(ftp_root, user="demo", password="demo-secret-pw") as ftp:
        print(f"demo: S3 server at {s3.url}, FTP server at ftp://{ftp.host}:{ftp.port}")
        seed_s3(s3.client())
        os.environ.update({
            "S3_ENDPOINT_URL": s3.url, "VENDOR_S3_URL": s3.url, "FTP_HOST": ftp.host, "FTP_PORT": str(ftp.port),
            "FTP_USER": "demo", "FTP_PASSWORD": "demo-secret-pw",
            "AWS_ACCESS_KEY_ID": TEST_AWS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        })
        os.chdir(workdir)
        report = workdir / "report.json"
        code = run_batch(HERE / "demo_batch_jobs.json", HERE / "project_registry.yaml", max_workers=4,
                         report=report, log_dir=workdir / "temp" / "logs", log_format="console")
        client = s3.client()
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=DEST_BUCKET)
                for o in page.get("Contents", [])]
        print(f"\ndemo: {len(keys)} objects landed in s3://{DEST_BUCKET}/ :")
        for key in sorted(keys):
            print(f"  {key}")
        summary = json.loads(report.read_text())
        print(f"\ndemo: run {summary['run_id']} exit code {summary['exit_code']} "
              f"(1 is expected: the demo data has invalid files, which landed under rejected/)")
        print(f"demo: report {report}; logs in {workdir / 'temp' / 'logs'}")
    print("demo: servers stopped")
    expected = (summary["totals"]["jobs"]["succeeded"] == 3 and summary["totals"]["files"]["rejected"] >= 3
                and code == ExitCode.JOBS_FAILED)
    if not expected:
        print("demo: the run did not behave as expected", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
