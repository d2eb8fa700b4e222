"""A 9 MB HTML page is crawled, its links followed, its fields extracted and the page validated
within a bounded memory (issue 10, item 13; issue 11: a 10 MB page in <= 200 MB), through the
CLI against a real HTTP server.

The page is a table of ~98,000 rows, each with a followed link: ~390,000 elements. The CLI
process's peak RSS is measured (``tests/e2e/peak_rss.py``: ``VmHWM``), and so is that of the
same crawl of a small page first: the difference is what the big page cost. Its selectors are
all streamable, so the page is read in one streaming pass without its tree and the difference
must stay under :data:`STREAM_BOUND_MB`; a page read as a tree (a selector that is not
streamable) under :data:`PARSE_BOUND_MB`. The figures are printed for the README (``pytest -s``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.html_tree import MAX_HTML_BYTES
from tests.e2e.helpers import Project, list_keys
from tests.modules.web_module.test_web_module import Page, Site

PAGE_BYTES = 9 * 1024 * 1024
#: Peak RSS a page may add to the CLI process over the same crawl of a small page (~90 MB): one
#: parse of at most MAX_HTML_NODES nodes (~210 MB in the worst shape, a page of links with two
#: attributes each), plus slack. Measured: the 9 MB table (880,000 nodes) +165 MB (+490 MB with
#: BeautifulSoup); the dense page stopped at the node bound +207 MB.
PARSE_BOUND_MB = 235
#: Peak RSS a page read in one streaming pass (common.html_tree.query_html) may add: the
#: parser's buffers and the links found, not the tree. Measured: the 9 MB table +25-50 MB (+165 MB
#: when its tree was held, before issue 11); the bound leaves room for CI noise yet fails if
#: the tree comes back.
STREAM_BOUND_MB = 90
RECORD_SCHEMA = {"type": "object", "required": ["headline"], "properties": {"headline": {"type": "string"}}}


def big_page(size: int) -> str:
    """A table of rows with one followed link each, ``size`` bytes or a little more."""
    head = ("<html><head><title>Big table</title></head><body><article><h1>All the items</h1>"
            "<p>Every item of the catalogue, one row each.</p><table>")
    rows, total, i = [], len(head), 0
    while total < size:
        row = f'<tr><td><a class="article" href="/p/{i}.html">Item {i}</a></td><td>some text {i}</td></tr>\n'
        rows.append(row)
        total += len(row)
        i += 1
    return head + "".join(rows) + "</table></article></body></html>"


def small_page(n: int) -> str:
    return (f"<html><head><title>Item {n}</title></head><body><article><h1>Item {n}</h1>"
            f"<p>The item number {n}, described in enough words to pass.</p></article>"
            '<table><tr><td><a href="/">home</a></td></tr></table></body></html>')


@pytest.fixture()
def site() -> Iterator[Site]:
    with Site({"/big.html": Page(big_page(PAGE_BYTES)), "/robots.txt": Page("", 404),
                      "/small.html": Page(small_page(9)), **{f"/p/{n}.html": Page(small_page(n)) for n in range(3)}}) as s:
        yield s


def baseline_mb(project: Project, service: dict[str, Any], small_url: str) -> float:
    """Peak RSS of the CLI crawling one small page with ``service``'s settings."""
    project.write_registry(registry({"small": {**service, "source": {**service["source"], "urls": [small_url]}}}))
    batch = project.write_batch([{"job_id": "small_1", "service_id": "small"}], name="small.json")
    result, peak, _ = run_measured(project, "--batch-file", str(batch))
    assert result.returncode == 0, result.stderr[-3000:]
    return peak


def registry(services: dict[str, Any]) -> dict[str, Any]:
    """A registry of ``services`` landing in the test's bucket (``$BUCKET``)."""
    return {"version": 1,
            "defaults": {"destination": {"bucket": "${BUCKET}", "endpoint_url": "${S3_URL}"},
                         "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 30},
            "services": services}


def run_measured(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """The CLI run, its peak RSS in MB and its wall time in seconds."""
    rss_file = project.root / "peak_rss_kib"
    script = Path(__file__).with_name("peak_rss.py")
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(script), str(rss_file), *args], check=False, cwd=project.root,
                            env={**project.env, "LOG_LEVEL": "INFO"}, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    return result, int(rss_file.read_text()) / 1024, seconds


def test_a_9_mb_page_is_crawled_and_validated_within_the_memory_bound(project: Project, s3, bucket: str,
                                                                      site: Site) -> None:
    assert PAGE_BYTES < MAX_HTML_BYTES
    (project.root / "record.schema.json").write_text(json.dumps(RECORD_SCHEMA))
    project.env["BUCKET"] = bucket
    service = {
        "type": "web",
        "source": {"urls": [site.url + "/big.html"], "follow": {"selector": "a.article", "max_pages": 3},
                   "extract": {"headline": "article h1"}},
        "validate": {"html": {"required": ["title", "article h1", "tr td a[href]"], "min_text_chars": 40},
                     "json_schema": "record.schema.json"},
    }
    base = baseline_mb(project, service, site.url + "/small.html")
    project.write_registry(registry({"catalogue": service}))
    batch = project.write_batch([{"job_id": "catalogue_1", "service_id": "catalogue"}])
    result, peak_mb, seconds = run_measured(project, "--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 0, result.stderr[-3000:]

    job = project.report()["jobs"][0]
    assert job["status"] == "succeeded"
    # the big page, three followed pages, and a record for each: all valid
    assert job["files"]["uploaded"] == 8 and job["files"]["rejected"] == 0
    assert sorted(set(site.paths())) == sorted(["/robots.txt", "/small.html", "/big.html", "/p/0.html", "/p/1.html",
                                                "/p/2.html"])
    keys = list_keys(s3, bucket, "data/web/catalogue/scraped/")
    record = next(k for k in keys if "big" in k and k.endswith(".json"))
    assert json.loads(s3.get_object(Bucket=bucket, Key=record)["Body"].read()) == {"headline": "All the items"}
    print(f"\n9 MB HTML page (crawl + links + extract + validate.html): peak RSS of the CLI process "
          f"{peak_mb:.0f} MB ({base:.0f} MB for a small page), {seconds:.1f} s")
    assert peak_mb - base < STREAM_BOUND_MB, f"peak RSS {peak_mb:.0f} MB for a 9 MB page, {base:.0f} MB for a small one"


def test_a_page_over_the_parse_bound_is_rejected_with_the_reason(project: Project, s3, bucket: str) -> None:
    """~6 MB of links, four nodes each (element, two attributes, text): over MAX_HTML_NODES, so
    neither parsed whole nor followed, and the memory stays within the bound all the same. A
    required selector that is not streamable (``a:first-child``) makes it a tree parse: the bound of the tree."""
    from common.html_tree import MAX_HTML_NODES

    links = MAX_HTML_NODES // 4 + 10_000
    rows = "".join(f"<a href=/{i} class=article>{i % 10}</a>" for i in range(links))
    dense = f"<html><head><title>Dense</title></head><body>{rows}</body></html>"
    project.env["BUCKET"] = bucket
    with Site({"/dense.html": Page(dense), "/robots.txt": Page("", 404), "/small.html": Page(small_page(9))}) as site:
        service = {"type": "web", "source": {"urls": [site.url + "/dense.html"],
                                             "follow": {"selector": "a.article", "max_pages": 3}},
                   "validate": {"html": {"required": ["a:first-child"]}}}
        base = baseline_mb(project, service, site.url + "/small.html")
        project.write_registry(registry({"dense": service}))
        batch = project.write_batch([{"job_id": "dense_1", "service_id": "dense"}])
        result, peak_mb, seconds = run_measured(project, "--batch-file", str(batch), "--report", "report.json")
        paths = site.paths()
    assert result.returncode == 1, result.stderr[-3000:]  # a rejected file
    job = project.report()["jobs"][0]
    assert job["status"] == "succeeded" and job["files"]["rejected"] == 1 and job["files"]["uploaded"] == 0
    assert "/dense.html" in paths and not any(p.startswith("/p/") or p[1:].isdigit() for p in paths)  # none followed
    keys = list_keys(s3, bucket, "data/web/dense/")
    errors_key = next(k for k in keys if k.endswith(".errors.json"))
    assert errors_key.startswith("data/web/dense/rejected/") and errors_key[: -len(".errors.json")] in keys
    problem = json.loads(s3.get_object(Bucket=bucket, Key=errors_key)["Body"].read())["errors"][0]
    assert problem["location"] == "document"
    assert problem["message"].startswith("links and extract fields not read: HTML of more than 1000000 nodes")
    print(f"\n{len(dense) / 1e6:.1f} MB page of {links} links (over the node bound): "
          f"peak RSS of the CLI process {peak_mb:.0f} MB ({base:.0f} MB for a small page), {seconds:.1f} s")
    assert peak_mb - base < PARSE_BOUND_MB
