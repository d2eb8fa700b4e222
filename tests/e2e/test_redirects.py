"""Redirects through the CLI (issue 10, items 5 and 6): what the api and web sources follow, and
what credentials go where, judged from the servers' own request logs.

The "foreign host" is a second local server on another port: it records every request and
every header it receives. No test sends traffic to 169.254.169.254: the refusal happens
before any connection, and the job's error says which rule refused it.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from module_system.testing import make_self_signed_cert
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply
from tests.e2e.helpers import Project, list_keys
from tests.modules.web_module.test_web_module import Page, Site, html

API_KEY = "api-key-Zr81-never-forwarded"
BEARER = "bearer-tok-Lm44-never-forwarded"
CLIENT_SECRET = "client-secret-Pq07-never-reposted"
WEB_SECRET = "web-secret-Vd52-never-in-cleartext"


def moved(location: str, status: int = 302) -> Any:
    return lambda req: ApiReply(status, b"", {"Location": location})


@pytest.fixture()
def foreign() -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.route("/steal", lambda req: json_reply({"stolen": True}))
        server.route("/token", lambda req: json_reply({"access_token": "foreign-token", "expires_in": 3600}))
        yield server


@pytest.fixture()
def api(foreign: ApiServer) -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.route("/v1/items", moved(f"{foreign.url}/steal"))
        server.route("/v1/meta", moved("http://169.254.169.254/latest/meta-data/iam/"))
        server.route("/v1/ok", lambda req: json_reply({"data": [1]}))
        server.route("/token", moved(f"{foreign.url}/token", 307))
        yield server


def api_registry(project: Project, bucket: str, api: ApiServer, foreign: ApiServer) -> dict[str, Any]:
    project.env.update({"API_URL": api.url, "ITEMS_API_KEY_SECRET": API_KEY, "ITEMS_BEARER_TOKEN": BEARER,
                        "OAUTH_CLIENT_SECRET": CLIENT_SECRET})
    header = {"type": "header", "name": "X-Api-Key", "value": "${ITEMS_API_KEY_SECRET}"}
    bearer = {"type": "bearer", "token": "${ITEMS_BEARER_TOKEN}"}
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 5},
        "services": {
            "api_default": {"type": "api", "source": {"base_url": "${API_URL}", "endpoints": ["/v1/items"],
                                                       "auth": header}},
            "api_follow": {"type": "api", "source": {"base_url": "${API_URL}", "endpoints": ["/v1/items"],
                                                      "auth": header, "follow_redirects": True}},
            "api_follow_allowed": {"type": "api", "source": {
                "base_url": "${API_URL}", "endpoints": ["/v1/items"], "auth": bearer, "follow_redirects": True,
                "headers": {"X-Tenant-Key": "${ITEMS_API_KEY_SECRET}"},
                "allowed_hosts": [f"127.0.0.1:{api.port}", f"127.0.0.1:{foreign.port}"]}},
            "api_metadata": {"type": "api", "source": {"base_url": "${API_URL}", "endpoints": ["/v1/meta"],
                                                        "auth": header, "follow_redirects": True,
                                                        "allowed_hosts": ["127.0.0.1"]}},
            "api_oauth": {"type": "api", "source": {
                "base_url": "${API_URL}", "endpoints": ["/v1/ok"], "follow_redirects": True,
                "auth": {"type": "oauth2_client_credentials", "token_url": "${API_URL}/token",
                         "client_id": "ingest", "client_secret": "${OAUTH_CLIENT_SECRET}", "client_auth": "body"}}},
        },
    }


def no_credentials(requests: list[ApiRequest]) -> bool:
    """None of the registry's credentials in any header or body the server received."""
    seen = " ".join(f"{r.headers} {r.body!r}" for r in requests)
    return not any(secret in seen for secret in (API_KEY, BEARER, CLIENT_SECRET))


def test_api_redirects_are_refused_or_followed_without_credentials(
        project: Project, s3, bucket: str, api: ApiServer, foreign: ApiServer) -> None:  # noqa: ANN001
    project.write_registry(api_registry(project, bucket, api, foreign))
    batch = project.write_batch([{"job_id": job, "service_id": job} for job in
                                 ("api_default", "api_follow", "api_metadata", "api_oauth")])
    result = project.run("--batch-file", str(batch), "--report", "report.json", "--max-workers", "1")
    assert result.returncode == 1, result.stderr
    jobs = {j["job_id"]: j for j in project.report()["jobs"]}
    assert foreign.requests == [], "the foreign host heard nothing: no redirect was followed"
    assert all(j["status"] == "failed" for j in jobs.values())

    # the default: a 3xx is not followed (as the docs always said)
    assert "HTTP 302 redirect" in jobs["api_default"]["error"]
    assert "follow_redirects is false" in jobs["api_default"]["error"]
    # following on: a host outside allowed_hosts (the default, base_url's origin) is refused
    assert f"127.0.0.1:{foreign.port} is not in allowed_hosts" in jobs["api_follow"]["error"]
    # a metadata address is refused by its own rule, before any connection
    assert "169.254.169.254 is a link-local or metadata address" in jobs["api_metadata"]["error"]
    # the token request never follows: the client secret is not posted to the foreign host
    error = jobs["api_oauth"]["error"]
    assert f"{api.url}/token" in error and "HTTP 307" in error and "never follow redirects" in error
    assert [r.path for r in api.requests_to("/v1/ok")] == [], "no page is asked for without a token"
    assert [r.method for r in api.requests_to("/token")] == ["POST"], "refused once, not retried"
    assert list_keys(s3, bucket, "data/") == []


def test_api_redirect_to_an_allowed_host_carries_no_credentials(
        project: Project, s3, bucket: str, api: ApiServer, foreign: ApiServer) -> None:  # noqa: ANN001
    project.write_registry(api_registry(project, bucket, api, foreign))
    batch = project.write_batch([{"job_id": "follow_allowed", "service_id": "api_follow_allowed"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 0, result.stderr
    first = api.requests_to("/v1/items")
    assert len(first) == 1 and first[0].headers["authorization"] == f"Bearer {BEARER}"
    assert first[0].headers["x-tenant-key"] == API_KEY
    [stolen] = foreign.requests
    assert stolen.path == "/steal"
    assert "authorization" not in stolen.headers and "x-tenant-key" not in stolen.headers
    assert no_credentials(foreign.requests)
    assert len(list_keys(s3, bucket, "data/")) == 1


# ----------------------------------------------------------------------------- web


class TlsSite(Site):
    """A Site served over TLS with a self-signed certificate for 127.0.0.1."""

    def __init__(self, cert_dir: Path, routes: dict[str, Any]) -> None:
        super().__init__(routes)
        server_pem, _ = make_self_signed_cert(cert_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server_pem)
        # Same file descriptor: the serving thread's selector keeps working on the wrapped socket.
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.port}"


def web_registry(project: Project, bucket: str, **source: Any) -> dict[str, Any]:
    project.env["WEB_SECRET_TOKEN"] = WEB_SECRET
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 5},
        "services": {"web": {"type": "web", "source": {
            "follow": {"selector": "a.article"}, "obey_robots": False,
            "headers": {"X-Secret-Token": "${WEB_SECRET_TOKEN}"}, **source}}},
    }


def test_web_https_to_http_redirect_is_not_followed_and_secrets_stay_on_tls(
        project: Project, s3, bucket: str, tmp_path: Path) -> None:  # noqa: ANN001
    with Site() as plain:
        plain.routes.update({"/x.html": Page(html("Plain X")), "/page.html": Page(html("Plain page"))})
        with TlsSite(tmp_path, {}) as tls:
            tls.routes.update({
                "/index.html": Page(html("Index", links=(f"{plain.url}/page.html",))),
                "/down": Page("", 302, {"Location": f"{plain.url}/x.html"}),
            })
            project.write_registry(web_registry(
                project, bucket, urls=[f"{tls.url}/index.html", f"{tls.url}/down"], verify_tls=False,
                allowed_hosts=[f"127.0.0.1:{tls.port}", f"127.0.0.1:{plain.port}"]))
            batch = project.write_batch([{"job_id": "tls", "service_id": "web"}])
            result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 0, result.stderr
    assert sorted(tls.paths()) == ["/down", "/index.html"]
    assert all(h.get("X-Secret-Token") == WEB_SECRET for h in tls.headers), "the secret goes to its TLS origin"
    assert plain.paths() == ["/page.html"], "the downgrade redirect is not followed; the plain link is"
    assert not any("X-Secret-Token" in h or WEB_SECRET in str(h) for h in plain.headers), \
        "the secret header never goes out in cleartext"
    log = (project.root / "temp" / "logs").rglob("*.log")
    assert any("a downgrade from https to http" in p.read_text() for p in log)
    assert len(list_keys(s3, bucket, "data/")) == 2


def test_web_bare_allowed_host_does_not_admit_other_ports(project: Project, s3, bucket: str) -> None:  # noqa: ANN001
    with Site({"/x.html": Page(html("Other port")), "/y.html": Page(html("Other port"))}) as other, Site() as site:
        site.routes.update({
            "/index.html": Page(html("Index", links=(f"{other.url}/x.html", "/a.html"))),
            "/a.html": Page(html("A")),
            "/r": Page("", 302, {"Location": f"{other.url}/y.html"}),
        })
        project.write_registry(web_registry(project, bucket, urls=[f"{site.url}/index.html", f"{site.url}/r"],
                                            allowed_hosts=["127.0.0.1"]))
        batch = project.write_batch([{"job_id": "bare", "service_id": "web"}])
        result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 0, result.stderr
    assert other.paths() == [], "127.0.0.1 admits the start URLs' port and 80/443, no other"
    assert sorted(site.paths()) == ["/a.html", "/index.html", "/r"]
    assert len(list_keys(s3, bucket, "data/")) == 2
