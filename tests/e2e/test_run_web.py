"""A web crawl through the CLI: the right pages land, invalid ones are rejected, and nothing is
requested that must not be (robots.txt, a foreign host), judged from the servers' own logs."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.helpers import Project, list_keys
from tests.modules.web_module.test_web_module import Page, Site

TOKEN = "web-tok-Qx93-never-logged"
RECORD_SCHEMA = {"type": "object", "required": ["headline"], "properties": {"headline": {"type": "string"}}}
TEXT = "<p>Enough visible words to pass the minimum text length of this service.</p>"


def article(title: str, h1: str | None, links: tuple[str, ...] = (), text: str = TEXT) -> str:
    heading = f"<h1>{h1}</h1>" if h1 is not None else ""
    anchors = "".join(f'<a class="article" href="{href}">more</a>' for href in links)
    return (f"<html><head><title>{title}</title><script>var pad = '{'x' * 300}';</script></head>"
            f"<body><article>{heading}{text}</article><nav>{anchors}</nav></body></html>")


@pytest.fixture()
def foreign() -> Iterator[Site]:
    with Site({"/evil.html": Page(article("Evil", "Evil"))}) as site:
        yield site


@pytest.fixture()
def site(foreign: Site) -> Iterator[Site]:
    with Site() as s:
        s.routes.update({
            "/robots.txt": Page("User-agent: *\nDisallow: /private/\n", headers={"Content-Type": "text/plain"}),
            "/news/": Page(article("News", "Today's news", links=(
                "/news/good-1.html", "good-2.html?ref=index", "/news/bad.html", "/news/short.html",
                "/private/secret.html", f"{foreign.url}/evil.html", "/files/report.pdf",
                "/news/moved", "/news/old"))),
            "/news/good-1.html": Page(article("Good one", "Rain expected")),
            "/news/good-2.html": Page(article("Good two", "Sun tomorrow", links=("/private/other.html",))),
            "/news/bad.html": Page(article("Bad", None)),
            "/news/short.html": Page(article("Short", "Brief", text="<p>tiny</p>")),
            "/private/secret.html": Page(article("Secret", "Secret")),
            "/files/report.pdf": Page(b"%PDF-1.4", headers={"Content-Type": "application/pdf"}),
            "/news/moved": Page("", 302, {"Location": f"{foreign.url}/evil.html"}),
            "/news/old": Page("", 301, {"Location": "/news/good-1.html"}),
        })
        yield s


def registry(project: Project, bucket: str, urls: list[str]) -> dict[str, Any]:
    (project.root / "record.schema.json").write_text(json.dumps(RECORD_SCHEMA))
    project.env["WEB_TOKEN"] = TOKEN
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {
            "web_news": {
                "type": "web",
                "source": {"urls": urls, "follow": {"selector": "a.article", "max_pages": 20},
                           "extract": {"headline": "article h1"},
                           "headers": {"Authorization": "Bearer ${WEB_TOKEN}"}},
                "validate": {"html": {"required": ["title", "article h1"], "min_text_chars": 40},
                             "json_schema": "record.schema.json"},
            },
        },
    }


def name(site: Site, path: str, slug: str, suffix: str = ".html") -> str:
    url = site.url + path
    return f"127.0.0.1_{site.port}/{slug}-{hashlib.sha1(url.encode()).hexdigest()[:8]}{suffix}"


def test_crawl_lands_valid_pages_rejects_invalid_ones_and_requests_nothing_forbidden(
        project: Project, s3, bucket: str, site: Site, foreign: Site) -> None:  # noqa: ANN001
    project.write_registry(registry(project, bucket, [site.url + "/news/"]))
    batch = project.write_batch([{"job_id": "web_1", "service_id": "web_news"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr  # files were rejected

    scraped, rejected = "data/web/web_news/scraped/", "data/web/web_news/rejected/"
    pages = {"/news/": "news", "/news/good-1.html": "news-good-1", "/news/good-2.html?ref=index": "news-good-2-ref-index"}
    bad = {"/news/bad.html": "news-bad", "/news/short.html": "news-short"}
    expected = ["_manifests/web_news/web_1.json"]
    for path, slug in pages.items():
        expected += [scraped + name(site, path, slug), scraped + name(site, path, slug, ".json")]
    expected += [rejected + name(site, p, s) + end for p, s in bad.items() for end in ("", ".errors.json")]
    expected += [rejected + name(site, "/news/bad.html", "news-bad", ".json") + end for end in ("", ".errors.json")]
    expected += [scraped + name(site, "/news/short.html", "news-short", ".json")]
    assert list_keys(s3, bucket) == sorted(expected)

    # nothing that must not be requested was: robots.txt disallows /private/, the other host is not allowed
    assert foreign.paths() == []
    assert sorted(site.paths()) == sorted(["/robots.txt", "/news/", "/news/good-1.html", "/news/good-2.html?ref=index",
                                           "/news/bad.html", "/news/short.html", "/files/report.pdf",
                                           "/news/moved", "/news/old"])
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for h in site.headers)

    def body(key: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]

    good1 = scraped + name(site, "/news/good-1.html", "news-good-1")
    assert body(good1) == article("Good one", "Rain expected").encode()
    assert json.loads(body(good1[: -len(".html")] + ".json")) == {"headline": "Rain expected"}
    errors = json.loads(body(rejected + name(site, "/news/bad.html", "news-bad") + ".errors.json"))
    assert [e["location"] for e in errors["errors"]] == ["selector 'article h1'"]
    assert errors["source_uri"] == site.url + "/news/bad.html"
    short_errors = json.loads(body(rejected + name(site, "/news/short.html", "news-short") + ".errors.json"))
    assert [e["location"] for e in short_errors["errors"]] == ["visible text"]
    record_errors = json.loads(body(rejected + name(site, "/news/bad.html", "news-bad", ".json") + ".errors.json"))
    assert record_errors["errors"][0]["location"].startswith("$")

    manifest = json.loads(body("_manifests/web_news/web_1.json"))
    assert manifest["status"] == "succeeded" and "headers" in manifest["source"]
    statuses = {f["source_uri"]: f["status"] for f in manifest["files"]}
    assert statuses[site.url + "/news/"] == "uploaded" and statuses[site.url + "/news/#extract"] == "uploaded"
    assert statuses[site.url + "/news/bad.html"] == "rejected" and len(statuses) == 10

    job = project.report()["jobs"][0]
    assert job["status"] == "succeeded"
    assert job["files"] == {"uploaded": 7, "skipped_same": 0, "skipped_unchanged": 0, "rejected": 3, "failed": 0}

    # the token is never written anywhere
    outputs = [result.stdout, result.stderr]
    outputs += [p.read_text() for p in project.root.rglob("*") if p.is_file() and p.suffix in (".log", ".json")]
    outputs += [body(k).decode() for k in list_keys(s3, bucket) if k.endswith(".json")]
    assert not any(TOKEN in text for text in outputs)

    # names are stable: a re-run uploads nothing new
    rerun = project.run("--batch-file", str(batch), "--report", "report2.json")
    assert rerun.returncode == 1, rerun.stderr
    again = project.report("report2.json")["jobs"][0]["files"]
    assert again == {"uploaded": 0, "skipped_same": 7, "skipped_unchanged": 0, "rejected": 3, "failed": 0}


def test_unreachable_start_url_fails_the_job(project: Project, s3, bucket: str) -> None:  # noqa: ANN001
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    project.write_registry(registry(project, bucket, [f"http://127.0.0.1:{port}/news/"]))
    batch = project.write_batch([{"job_id": "web_down", "service_id": "web_news"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr
    job = project.report()["jobs"][0]
    assert job["status"] == "failed" and f"127.0.0.1:{port}" in job["error"]
    assert list_keys(s3, bucket, "data/") == []


@pytest.mark.parametrize("key", ["delay_s", "max_connections_per_host"])
def test_the_former_politeness_keys_of_source_are_config_errors(project: Project, bucket: str, key: str) -> None:
    reg = registry(project, bucket, ["http://127.0.0.1:9/news/"])
    reg["services"]["web_news"]["source"][key] = 1
    project.write_registry(reg)
    batch = project.write_batch([{"job_id": "web_1", "service_id": "web_news"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "service 'web_news'" in line and f"source.{key}" in line and "Traceback" not in result.stderr


def test_one_job_crawls_transfers_pages_at_once_within_limits_max_connections(
        project: Project, s3: Any, bucket: str) -> None:
    """The service's ``transfers`` and ``limits`` reach the crawl through the CLI: one job has as
    many requests in flight as the host cap allows (counted by the server), never more."""
    pages = {f"/p/{i}.html": Page(article(f"P{i}", f"Page {i}")) for i in range(24)}
    index = Page(article("Index", "Index", links=tuple(pages)))
    with Site({"/index.html": index, **pages}, delay_s=0.01, gather=3) as site:
        reg = registry(project, bucket, [site.url + "/index.html"])
        reg["services"]["web_news"].update({"transfers": 6, "limits": {"max_connections": 3}})
        reg["services"]["web_news"]["source"]["follow"]["max_pages"] = 100
        project.write_registry(reg)
        batch = project.write_batch([{"job_id": "web_1", "service_id": "web_news"}])
        result = project.run("--batch-file", str(batch), "--report", "report.json")
        assert result.returncode == 0, result.stderr
        assert site.peak == 3, f"{site.peak} requests at once with limits.max_connections: 3"
    job = project.report()["jobs"][0]
    assert job["status"] == "succeeded" and job["files"]["uploaded"] == 2 * 25  # pages and their records
    assert len(list_keys(s3, bucket, "data/web/web_news/scraped/")) == 50
