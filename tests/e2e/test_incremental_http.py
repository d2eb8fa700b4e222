"""``incremental: true`` over HTTP through the CLI: the second run asks web leaves and unpaginated
API endpoints with If-None-Match / If-Modified-Since, records each 304 as skipped_unchanged
(the last run's key kept), and uploads what changed; the servers' own logs are the witness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from modules.api_module.pagination import page_name as api_page_name
from tests.servers.api_server import ApiServer
from modules.web_module.pages import page_name as web_page_name
from tests.e2e.helpers import Project, list_keys
from tests.modules.api_module.test_api_reliability import Versioned
from tests.modules.web_module.test_web_module import Page, html
from tests.modules.web_module.test_web_reliability import ConditionalSite

HTML = "text/html; charset=utf-8"
MODIFIED = "Thu, 01 Jan 2026 12:00:00 GMT"


@pytest.fixture()
def site() -> Iterator[ConditionalSite]:
    with ConditionalSite() as s:
        s.routes.update({
            "/index.html": Page(html("Index", links=("/a.html", "/b.html", "/c.html")),
                                headers={"Content-Type": HTML, "ETag": '"index-1"'}),
            "/a.html": Page(html("A"), headers={"Content-Type": HTML, "ETag": '"a-1"'}),
            "/b.html": Page(html("B"), headers={"Content-Type": HTML, "Last-Modified": MODIFIED}),
            "/c.html": Page(html("C"), headers={"Content-Type": HTML, "ETag": '"c-1"'}),
        })
        yield s


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.route("/v1/stations", Versioned({"stations": ["a", "b"]}))
        server.route("/v1/alerts", Versioned({"alerts": []}, etag='"alerts-1"'))
        yield server


def registry(bucket: str, site: ConditionalSite, api: ApiServer) -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {
            "web_inc": {
                "type": "web", "incremental": True, "rate_limit": {"requests_per_s": 100},
                "source": {"urls": [site.url + "/index.html"], "follow": {"selector": "a.article", "max_depth": 1}},
            },
            "api_inc": {
                "type": "api", "incremental": True, "rate_limit": {"requests_per_s": 100},
                "source": {"base_url": api.url, "endpoints": ["/v1/stations", "/v1/alerts"]},
            },
        },
    }


def files_of(project: Project, report: str) -> dict[str, dict[str, int]]:
    return {j["job_id"]: j["files"] for j in project.report(report)["jobs"]}


def counts(**nonzero: int) -> dict[str, int]:
    return {"uploaded": 0, "skipped_same": 0, "skipped_unchanged": 0, "rejected": 0, "failed": 0, **nonzero}


def test_second_run_skips_what_answers_304_and_uploads_what_changed(
        project: Project, s3, bucket: str, site: ConditionalSite, api: ApiServer) -> None:  # noqa: ANN001
    project.write_registry(registry(bucket, site, api))
    batch = project.write_batch([{"job_id": "web_1", "service_id": "web_inc"},
                                 {"job_id": "api_1", "service_id": "api_inc"}])
    first = project.run("--batch-file", str(batch), "--report", "report1.json")
    assert first.returncode == 0, first.stderr
    assert files_of(project, "report1.json") == {"web_1": counts(uploaded=4), "api_1": counts(uploaded=2)}
    assert not [r for r in api.requests if "if-none-match" in r.headers or "if-modified-since" in r.headers]
    keys_before = list_keys(s3, bucket, "data/")

    # one web page and one API endpoint change; everything else stays as it was
    site.routes["/c.html"] = Page(html("C, edited"), headers={"Content-Type": HTML, "ETag": '"c-2"'})
    api.route("/v1/alerts", alerts := Versioned({"alerts": ["storm"]}, etag='"alerts-2"'))
    stations: Versioned = api.routes["/v1/stations"]  # type: ignore[assignment]
    site.answers.clear()
    site.headers.clear()
    site.requests.clear()
    api.requests.clear()

    second = project.run("--batch-file", str(batch), "--report", "report2.json")
    assert second.returncode == 0, second.stderr
    assert files_of(project, "report2.json") == {
        # the index is read in full (its links are followed): the same bytes, skipped_same
        "web_1": counts(uploaded=1, skipped_same=1, skipped_unchanged=2),
        "api_1": counts(uploaded=1, skipped_unchanged=1),
    }

    # the servers' logs: conditional requests for the leaves and the endpoints, 304 where unchanged
    # (the leaves are requested in parallel: their order varies)
    assert sorted(site.conditional()) == [("/a.html", "If-None-Match"), ("/b.html", "If-Modified-Since"),
                                          ("/c.html", "If-None-Match")]
    answers = [a for a in site.answers if a[0] != "/robots.txt"]
    assert answers[0] == ("/index.html", 200)
    assert sorted(answers[1:]) == [("/a.html", 304), ("/b.html", 304), ("/c.html", 200)]
    asked = {r.path: r.headers for r in api.requests}
    assert asked["/v1/stations"]["if-none-match"] == '"v1"' and asked["/v1/alerts"]["if-none-match"] == '"alerts-1"'
    assert stations.statuses[-1] == 304 and alerts.statuses == [200]

    # no key appeared or vanished; the changed content landed under the same keys
    assert list_keys(s3, bucket, "data/") == keys_before
    c_key = f"data/web/web_inc/scraped/{web_page_name(site.url + '/c.html')}"
    assert s3.get_object(Bucket=bucket, Key=c_key)["Body"].read() == html("C, edited").encode()
    alerts_key = f"data/api/api_inc/responses/{api_page_name('/v1/alerts', 1)}"
    assert json.loads(s3.get_object(Bucket=bucket, Key=alerts_key)["Body"].read()) == {"alerts": ["storm"]}

    # the manifest keeps each unchanged file's key and version marks, so the next run asks again
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/web_inc/web_1.json")["Body"].read())
    by_uri = {f["source_uri"]: f for f in manifest["files"]}
    a = by_uri[site.url + "/a.html"]
    assert a["status"] == "skipped_unchanged"
    assert a["key"] == f"data/web/web_inc/scraped/{web_page_name(site.url + '/a.html')}", "the last run's key"
    assert a["identity"] == {"etag": '"a-1"'}
    assert by_uri[site.url + "/b.html"]["identity"] == {"last_modified": MODIFIED}
    assert by_uri[site.url + "/c.html"]["status"] == "uploaded" and by_uri[site.url + "/c.html"]["identity"] == {
        "etag": '"c-2"'}
