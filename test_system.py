"""The demo: a real run against embedded local servers, no AWS account or network.

    pip install -r requirements.txt && python test_system.py

Starts an S3-compatible server (moto), an FTP server (pyftpdlib), a news site and a
JSON weather API (http.server) on 127.0.0.1, seeds them with sample data (some of it
deliberately invalid), runs
``demo_batch_jobs.json`` against ``project_registry.yaml`` through the same code path
as the CLI, prints the live progress and summary, lists where the files landed
and counts the rows the FTP sales files loaded into a SQLite table (`sales.db`),
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


WEATHER_TOKEN = "demo-weather-token-7c1f"
ARTICLE_TEXT = ("Local markets rallied on Tuesday as the harbour reopened after the storm. " * 5).strip()


def news_site() -> dict:
    """Routes of the demo news site: an index, two good articles, one too thin, one behind robots.txt."""
    def html(body: str) -> object:
        return lambda request: (200, {"Content-Type": "text/html; charset=utf-8"}, body.encode())

    def article(title: str, heading: str, text: str) -> object:
        return html(f"<html><head><title>{title}</title></head><body><article>"
                    f"{heading}<p>{text}</p></article></body></html>")

    index = ("<html><head><title>News</title></head><body><h1>Latest</h1><ul>"
             '<li><a class="article" href="/news/harbour.html">Harbour reopens</a></li>'
             '<li><a class="article" href="/news/markets.html">Markets rally</a></li>'
             '<li><a class="article" href="/news/stub.html">Stub</a></li>'
             '<li><a class="article" href="/private/draft.html">Draft (robots.txt says no)</a></li>'
             '<li><a class="article" href="http://example.invalid/elsewhere.html">Elsewhere</a></li>'
             "</ul>" + "<p>" + "Read all about it. " * 12 + "</p></body></html>")
    robots = lambda request: (200, {"Content-Type": "text/plain"}, b"User-agent: *\nDisallow: /private/\n")  # noqa: E731
    return {
        "/robots.txt": robots,
        "/news/": html(index),
        "/news/harbour.html": article("Harbour reopens", "<h1>Harbour reopens</h1>", ARTICLE_TEXT),
        "/news/markets.html": article("Markets rally", "<h1>Markets rally</h1>", ARTICLE_TEXT),
        "/news/stub.html": article("Stub", "", "Too short, and no headline."),
        "/private/draft.html": article("Draft", "<h1>Draft</h1>", ARTICLE_TEXT),
    }


def weather_api(base_url_holder: list[str]) -> dict:
    """Routes of the demo weather API: bearer auth, two pages per city via Link headers."""
    def readings(city: str, page: int) -> list[dict]:
        temp = {"paris": 11.5, "oslo": -2.0, "rome": 17.25}[city]
        if city == "oslo" and page == 2:
            return [{"time": "2026-11-21T12:00:00Z", "temp_c": "cold"}]  # invalid: lands under rejected/
        return [{"time": f"2026-11-2{page}T{h:02d}:00:00Z", "temp_c": temp + h / 10} for h in range(0, 24, 6)]

    def endpoint(request) -> tuple[int, dict, bytes]:  # noqa: ANN001
        if request.headers.get("Authorization") != f"Bearer {WEATHER_TOKEN}":
            return 401, {"Content-Type": "application/json"}, b'{"error": "unauthorized"}'
        query = dict(part.split("=", 1) for part in request.path.split("?", 1)[1].split("&"))
        city, page = query.get("city", ""), int(query.get("page", "1"))
        if city not in ("paris", "oslo", "rome"):
            return 404, {"Content-Type": "application/json"}, b'{"error": "unknown city"}'
        headers = {"Content-Type": "application/json"}
        if page < 2:
            headers["Link"] = f'<{base_url_holder[0]}/v1/weather?city={city}&page={page + 1}>; rel="next"'
        body = json.dumps({"city": city, "page": page, "readings": readings(city, page)}).encode()
        return 200, headers, body

    return {"/v1/weather": endpoint}


def count_rows(path: Path, table: str) -> int:
    """Rows of ``table`` in the SQLite database at ``path`` (0 when there is none)."""
    import sqlite3

    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def main() -> int:
    from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET, FtpServer, HttpServer, S3Server
    from orchestrator.cli_init import run_batch
    from orchestrator.exit_codes import ExitCode

    workdir = Path(tempfile.mkdtemp(prefix="module-system-demo-"))
    ftp_root = workdir / "ftp"
    seed_ftp(ftp_root)
    print(f"demo: working in {workdir}")
    api_url: list[str] = []
    with S3Server() as s3, FtpServer(ftp_root, user="demo", password="demo-secret-pw") as ftp, \
            HttpServer(news_site()) as site, HttpServer(weather_api(api_url)) as api:
        api_url.append(api.url)
        print(f"demo: S3 server at {s3.url}, FTP server at ftp://{ftp.host}:{ftp.port}")
        print(f"demo: news site at {site.url}/news/, weather API at {api.url}/v1/weather")
        seed_s3(s3.client())
        os.environ.update({
            "NEWS_SITE_URL": site.url, "WEATHER_API_URL": api.url, "WEATHER_TOKEN": WEATHER_TOKEN,
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
        sales_rows = count_rows(workdir / "sales.db", "sales")
        print(f"\ndemo: {sales_rows} rows in table 'sales' of sqlite:///{workdir / 'sales.db'} "
              "(the valid FTP CSV files, typed by validate.csv)")
        print(f"\ndemo: run {summary['run_id']} exit code {summary['exit_code']} "
              f"(1 is expected: the demo data has invalid files, which landed under rejected/)")
        print(f"demo: report {report}; logs in {workdir / 'temp' / 'logs'}")
        print(f"demo: run history in {workdir / 'temp' / 'history.sqlite3'} "
              f"(module-system history --state-dir {workdir / 'temp'})")
        never = [p for p in site.requests if p.startswith("/private/")]
        print(f"demo: the news site served {len(site.requests)} requests; robots.txt kept the crawler "
              f"out of /private/ ({len(never)} requests there)")
    print("demo: servers stopped")
    jobs = {j["job_id"]: j for j in summary["jobs"]}
    expected = (all(j["status"] == "succeeded" for j in jobs.values()) and len(jobs) == 5
                and all(jobs[j]["files"]["uploaded"] > 0 for j in jobs) and summary["totals"]["files"]["rejected"] >= 5
                and not never and code == ExitCode.JOBS_FAILED and sales_rows > 0)
    if not expected:
        print("demo: the run did not behave as expected", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
