"""Credentials inside URLs through the CLI (issue 10, item 7): a ``?token=`` value and a
``user:password@`` in the URLs of api and web sources reach the servers that need them and
appear nowhere the run writes: stdout, stderr, log files, report, manifests, S3 keys, objects."""

from __future__ import annotations

import json
import socket
from typing import Any

from tests.servers.api_server import ApiServer, json_reply
from tests.e2e.helpers import Project, list_keys
from tests.modules.api_module.test_api_reliability import Versioned
from tests.modules.web_module.test_web_module import Page, Site, html
from tests.modules.web_module.test_web_reliability import ConditionalSite

URL_TOKEN = "urltok-Hh61-query-secret"
URL_PASSWORD = "urlpw-Ks29-userinfo-secret"
API_KEY = "apikey-Ww73-query-map-secret"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def everything_written(project: Project, result: Any, s3: Any, bucket: str) -> dict[str, str]:  # noqa: ANN401
    """Every text the run wrote: console, report, logs, every key of the bucket and every object
    the framework wrote (manifests, errors documents); the pages themselves are the source's data
    (the index page links to ``?sig=<token>``) and land as they are."""
    texts = {"stdout": result.stdout, "stderr": result.stderr}
    for path in project.root.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".jsonl", ".txt"):
            texts[str(path)] = path.read_text(errors="replace")
    keys = list_keys(s3, bucket)
    texts["keys"] = "\n".join(keys)
    for key in (k for k in keys if k.startswith("_manifests/") or k.endswith(".errors.json")):
        texts[key] = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode(errors="replace")
    return texts


def test_url_credentials_are_used_but_never_written(project: Project, s3, bucket: str) -> None:  # noqa: ANN001
    with ApiServer() as api, Site() as site:
        api.route("/v1/data", lambda req: json_reply({"data": [1, 2]}))
        site.routes.update({
            "/index.html": Page(html("Index", links=("/gone.html?sig=" + URL_TOKEN,))),
        })
        project.env.update({"API_PORT": str(api.port), "WEB_PORT": str(site.port), "URL_TOKEN": URL_TOKEN,
                            "URL_PASSWORD": URL_PASSWORD, "QUERY_API_KEY": API_KEY,
                            "DOWN_PORT": str(closed_port())})
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                         "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 5},
            "services": {
                "api_urls": {"type": "api", "source": {
                    "base_url": "http://reader:${URL_PASSWORD}@127.0.0.1:${API_PORT}",
                    "endpoints": ["/v1/data?token=${URL_TOKEN}&x=1", "/v1/missing?api_key=${URL_TOKEN}"],
                    "query": {"api_key": "${QUERY_API_KEY}"}}},
                "api_down": {"type": "api", "source": {
                    "base_url": "http://reader:${URL_PASSWORD}@127.0.0.1:${DOWN_PORT}",
                    "endpoints": ["/v1/data?access_token=${URL_TOKEN}"]}},
                "web_urls": {"type": "web", "source": {
                    "urls": ["http://reader:${URL_PASSWORD}@127.0.0.1:${WEB_PORT}/index.html?token=${URL_TOKEN}&x=1"],
                    "follow": {"selector": "a.article"}, "obey_robots": False}},
            },
        })
        batch = project.write_batch([{"job_id": s, "service_id": s} for s in ("api_urls", "api_down", "web_urls")])
        result = project.run("--batch-file", str(batch), "--report", "report.json", "--log-format", "json")

    assert result.returncode == 1, result.stderr  # a 404, a refused connection, a 404 link
    # the servers got what they needed
    [data] = api.requests_to("/v1/data")
    assert data.query == {"token": URL_TOKEN, "x": "1", "api_key": API_KEY}
    assert data.headers["authorization"].startswith("Basic ")  # user info sent as HTTP Basic
    assert f"/index.html?token={URL_TOKEN}&x=1" in site.paths()
    assert f"/gone.html?sig={URL_TOKEN}" in site.paths()

    # ... and the run wrote none of it
    texts = everything_written(project, result, s3, bucket)
    for secret in (URL_TOKEN, URL_PASSWORD, API_KEY):
        leaked = [name for name, text in texts.items() if secret in text]
        assert not leaked, f"{secret} written to {leaked}"

    # what is written instead: the masked URLs, so the records still say where files came from
    manifest = json.loads(texts["_manifests/api_urls/api_urls.json"])
    uris = {f["source_uri"]: f["status"] for f in manifest["files"]}
    assert uris == {f"http://127.0.0.1:{api.port}/v1/data?token=***&x=1&api_key=***": "uploaded",
                    f"http://127.0.0.1:{api.port}/v1/missing?api_key=***": "failed"}
    assert manifest["source"]["base_url"] == f"http://reader:***@127.0.0.1:{api.port}"
    assert manifest["source"]["query"] == {"api_key": "***"}
    web = json.loads(texts["_manifests/web_urls/web_urls.json"])
    assert {f["source_uri"] for f in web["files"]} == {
        f"http://127.0.0.1:{site.port}/index.html?token=***&x=1", f"http://127.0.0.1:{site.port}/gone.html?sig=***"}
    jobs = {j["job_id"]: j for j in json.loads(texts[str(project.root / "report.json")])["jobs"]}
    assert "access_token=***" in jobs["api_down"]["error"], "a library's message quoting the URL is masked too"
    names = texts["keys"].splitlines()
    assert any("/v1-data-token-x-1-" in k for k in names) and any("/index-token-x-1-" in k for k in names), \
        "a key names the parameter, never its value"


def test_incremental_runs_match_urls_whose_secret_was_masked(project: Project, s3, bucket: str) -> None:  # noqa: ANN001
    """The manifest records the masked URI; the second run still finds it and asks conditionally."""
    with ApiServer() as api, ConditionalSite() as site:
        api.route("/v1/stations", Versioned({"stations": ["a"]}))
        site.routes["/index.html"] = Page(html("Index"), headers={"Content-Type": "text/html", "ETag": '"i-1"'})
        project.env.update({"API_URL": api.url, "SITE_URL": site.url, "URL_TOKEN": URL_TOKEN})
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "timeout_s": 5},
            "services": {
                "api_inc": {"type": "api", "incremental": True, "source": {
                    "base_url": "${API_URL}", "endpoints": ["/v1/stations?token=${URL_TOKEN}"]}},
                "web_inc": {"type": "web", "incremental": True, "source": {
                    "urls": ["${SITE_URL}/index.html?token=${URL_TOKEN}"], "obey_robots": False}},
            },
        })
        batch = project.write_batch([{"job_id": "a", "service_id": "api_inc"}, {"job_id": "w", "service_id": "web_inc"}])
        for _ in range(2):
            result = project.run("--batch-file", str(batch), "--report", "report.json")
            assert result.returncode == 0, result.stderr
        files = {j["job_id"]: j["files"] for j in project.report()["jobs"]}
    assert files["a"]["skipped_unchanged"] == 1 and files["w"]["skipped_unchanged"] == 1
    assert [r.headers.get("if-none-match") for r in api.requests] == [None, '"v1"']
    assert [status for _, status in site.answers] == [200, 304]
    assert not any(URL_TOKEN in k for k in list_keys(s3, bucket))
