"""An incomplete listing is not a success (issue 10, item 17), through the CLI against real servers.

* an API endpoint that still offers a next page when ``paginate.max_pages`` is reached;
* an S3 listing that says it is truncated but gives no continuation token (an HTTP proxy
  in front of moto asks for small pages and strips the token from the answers).

Either way the pages or objects that were listed land and the manifest records them, the
job ends ``failed`` with the reason, the run exits 1, and the failed-jobs file re-runs the job.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from modules.api_module.pagination import page_name
from module_system.testing import LocalHttpServer
from tests.servers.api_server import ApiRequest, ApiServer, json_reply
from tests.e2e.helpers import Project, list_keys


def endless(req: ApiRequest) -> Any:
    """Every page links to the next one: there is always more."""
    page = int(req.query.get("page", "1"))
    return json_reply([{"n": page}], headers={"Link": f'</v1/feed?page={page + 1}>; rel="next"'})


def short(req: ApiRequest) -> Any:
    """Two pages, then no next link: complete within max_pages."""
    page = int(req.query.get("page", "1"))
    return json_reply([{"n": page}], headers={"Link": '</v1/short?page=2>; rel="next"'} if page < 2 else {})


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.route("/v1/feed", endless)
        server.route("/v1/short", short)
        yield server


def manifest(s3, bucket: str, service: str, job: str) -> dict[str, Any]:  # noqa: ANN001
    body = s3.get_object(Bucket=bucket, Key=f"_manifests/{service}/{job}.json")["Body"].read()
    return json.loads(body)  # type: ignore[no-any-return]


def test_api_stopping_at_max_pages_with_more_offered_fails_the_job(project: Project, s3, bucket: str,  # noqa: ANN001
                                                                   api: ApiServer) -> None:
    project.env["API_URL"] = api.url
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {"feed": {"type": "api", "source": {
            "base_url": "${API_URL}", "endpoints": ["/v1/feed", "/v1/short"],
            "paginate": {"type": "link_header", "max_pages": 3}}}},
    })
    batch = project.write_batch([{"job_id": "feed_1", "service_id": "feed"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr

    report = project.report()
    job = report["jobs"][0]
    assert job["status"] == "failed"
    assert "listing incomplete" in job["error"] and "max_pages (3)" in job["error"] and "/v1/feed" in job["error"]
    assert "/v1/short" not in job["error"]
    assert job["files"]["uploaded"] == 5 and job["files"]["failed"] == 0
    assert job["attempts"] == 1  # not transient: not retried
    # what was read landed, and the manifest says so
    landed = [f"data/api/feed/responses/{page_name('/v1/feed', n)}" for n in (1, 2, 3)]
    landed += [f"data/api/feed/responses/{page_name('/v1/short', n)}" for n in (1, 2)]
    assert list_keys(s3, bucket, "data/") == sorted(landed)
    document = manifest(s3, bucket, "feed", "feed_1")
    assert document["status"] == "failed" and "listing incomplete" in document["error"]
    assert sorted(f["key"] for f in document["files"]) == sorted(landed)
    assert {f["status"] for f in document["files"]} == {"uploaded"}
    # page 4 was offered and never asked for; the failed-jobs file re-runs the job
    assert [r.query.get("page", "1") for r in api.requests_to("/v1/feed")] == ["1", "2", "3"]
    failed = json.loads((project.root / report["failed_jobs_file"]).read_text())
    assert [j["job_id"] for j in failed["jobs"]] == ["feed_1"]


# ---------------------------------------------------------------------- S3 without a token


class TokenStrippingProxy:
    """An HTTP proxy to moto that asks ListObjectsV2 for ``max_keys`` keys a page and removes
    ``NextContinuationToken`` from every listing it relays: "truncated", but not where to go on."""

    def __init__(self, target: str, max_keys: int) -> None:
        upstream = urlsplit(target)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query, keep_blank_values=True))
                listing = query.get("list-type") == "2"
                if listing:
                    query["max-keys"] = str(max_keys)
                path = parts.path + ("?" + urlencode(query) if query else "")
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
                try:
                    conn.request("GET", path, headers={k: v for k, v in self.headers.items()})
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                if listing:
                    proxy.listings += 1
                    body = re.sub(rb"<NextContinuationToken>.*?</NextContinuationToken>", b"", body)
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.listings = 0
        self._listener = LocalHttpServer(Handler)
        self.url = self._listener.url

    def stop(self) -> None:
        self._listener.stop()


@pytest.fixture()
def stripping_proxy(s3_server) -> Iterator[TokenStrippingProxy]:  # noqa: ANN001
    proxy = TokenStrippingProxy(s3_server.url, max_keys=2)
    yield proxy
    proxy.stop()


def test_s3_listing_truncated_without_a_token_fails_the_job(project: Project, s3, bucket: str,  # noqa: ANN001
                                                            stripping_proxy: TokenStrippingProxy) -> None:
    source = bucket + "-src"
    s3.create_bucket(Bucket=source)
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        s3.put_object(Bucket=source, Key=f"in/{name}", Body=name.encode())
    project.env["SOURCE_S3_URL"] = stripping_proxy.url
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {"vendor": {"type": "s3", "source": {
            "bucket": source, "prefix": "in/", "endpoint_url": "${SOURCE_S3_URL}"}}},
    })
    batch = project.write_batch([{"job_id": "vendor_1", "service_id": "vendor"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr

    job = project.report()["jobs"][0]
    assert job["status"] == "failed"
    assert job["error"] == f"listing incomplete: s3://{source}/in/ was listed as truncated with no continuation token"
    assert job["files"]["uploaded"] == 2 and job["attempts"] == 1
    assert stripping_proxy.listings == 1
    landed = ["data/s3/vendor/validated/a.txt", "data/s3/vendor/validated/b.txt"]
    assert list_keys(s3, bucket, "data/") == landed
    document = manifest(s3, bucket, "vendor", "vendor_1")
    assert document["status"] == "failed"
    assert sorted(f["key"] for f in document["files"]) == landed
