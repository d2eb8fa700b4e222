"""The redirect policy shared by the api and web sources: hosts, downgrades, metadata addresses,
and where credentials may go."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from module_system.testing import LocalHttpServer
from modules.http_sessions import JobCookies, new_session
from modules.redirect_policy import AllowedHosts, RedirectPolicy, is_metadata_address

BASE = "http://127.0.0.1:8000/"


def test_allowed_host_entries() -> None:
    hosts = AllowedHosts(["127.0.0.1", "example.com:8443", "[::1]:9000", "https://Other.org:444/path"], [BASE])
    assert hosts.allows("http://127.0.0.1:8000/x"), "a bare host admits the configured URLs' ports"
    assert hosts.allows("http://127.0.0.1/x") and hosts.allows("https://127.0.0.1/x"), "... and 80 and 443"
    assert not hosts.allows("http://127.0.0.1:8001/x") and not hosts.allows("http://127.0.0.1:443/x") is False
    assert hosts.allows("https://example.com:8443/") and not hosts.allows("https://example.com/")
    assert hosts.allows("http://[::1]:9000/") and not hosts.allows("http://[::1]:9001/")
    assert hosts.allows("https://other.org:444/") and not hosts.allows("https://www.example.com:8443/")
    assert not hosts.allows("ftp://127.0.0.1/") and not hosts.allows("http://:80/")


def test_redirect_rules_in_order() -> None:
    policy = RedirectPolicy(AllowedHosts(["127.0.0.1", "api.test:443"], [BASE, "https://127.0.0.1:8443/"]),
                            [BASE], resolve=lambda host: ["127.0.0.1"])
    assert policy.refusal(BASE, "http://127.0.0.1:8000/next") is None
    assert policy.refusal("https://127.0.0.1:8443/", "http://127.0.0.1:8000/") == "a downgrade from https to http"
    assert policy.refusal(BASE, "http://127.0.0.1:9/") == "host 127.0.0.1:9 is not in allowed_hosts"
    assert policy.refusal(BASE, "ftp://127.0.0.1/") == "not an http(s) URL"
    for target in ("http://169.254.169.254/latest/", "http://[fd00:ec2::254]/", "http://[fe80::1]/",
                   "http://[::ffff:169.254.169.254]/", "http://100.100.100.200/"):
        assert "link-local or metadata" in str(policy.refusal(BASE, target)), target
    off = RedirectPolicy(AllowedHosts([], [BASE]), [BASE], follow=False)
    assert off.refusal(BASE, BASE) == "redirects are not followed (follow_redirects is false)"


def test_an_allowed_name_resolving_to_a_metadata_address_is_refused_unless_the_address_is_written() -> None:
    resolved = {"api.test": ["10.0.0.5"], "rebound.test": ["169.254.169.254"]}
    policy = RedirectPolicy(AllowedHosts(["api.test", "rebound.test"]), ["https://api.test/"],
                            resolve=lambda host: resolved[host])
    assert policy.refusal("https://api.test/", "https://api.test/v2") is None
    assert policy.refusal("https://api.test/", "https://rebound.test/") == \
        "host rebound.test resolves to 169.254.169.254, a link-local or metadata address"
    written = RedirectPolicy(AllowedHosts(["rebound.test", "169.254.169.254"]), [], resolve=lambda host: resolved[host])
    assert written.refusal("https://api.test/", "https://rebound.test/") is None
    assert written.refusal("http://api.test/", "http://169.254.169.254:81/") == \
        "host 169.254.169.254:81 is not in allowed_hosts"
    assert written.refusal("http://api.test/", "https://169.254.169.254/") is None


def test_credentials_go_only_to_the_configured_origins() -> None:
    policy = RedirectPolicy(AllowedHosts(["h.test"]), ["http://h.test/", "https://api.test:8443/v1"])
    assert policy.sends_credentials("http://h.test/x") and policy.sends_credentials("https://h.test/x"), \
        "an http origin on port 80 also admits its https form (the same host, authenticated by TLS)"
    assert policy.sends_credentials("https://api.test:8443/other")
    assert not policy.sends_credentials("http://api.test:8443/"), "never the cleartext form of an https origin"
    assert not policy.sends_credentials("https://api.test/") and not policy.sends_credentials("http://h.test:8080/")
    assert not policy.sends_credentials("http://www.h.test/")


def test_metadata_addresses() -> None:
    assert all(map(is_metadata_address, ["169.254.169.254", "169.254.170.2", "fe80::1%eth0", "fd00:ec2::254",
                                         "::ffff:169.254.169.254", "100.100.100.200"]))
    assert not any(map(is_metadata_address, ["127.0.0.1", "10.0.0.1", "::1", "example.com", "fd00::1"]))


def test_a_cookie_goes_back_only_to_the_origin_that_set_it() -> None:
    received: dict[int, list[str | None]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            port = self.server.server_address[1]
            received.setdefault(port, []).append(self.headers.get("Cookie"))
            self.send_response(200)
            self.send_header("Set-Cookie", f"sid=from-{port}; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    cookies = JobCookies()  # one job's; the pooled session it uses keeps none

    def get(session: Any, url: str, headers: dict[str, str]) -> None:
        with session.get(url, headers={**headers, **cookies.header(url, headers)}, timeout=5) as response:
            cookies.keep(response)

    with LocalHttpServer(Handler) as first, LocalHttpServer(Handler) as second:
        a, b = first.port, second.port
        with new_session(first.url) as session:
            for port in (a, a, b, b):
                get(session, f"http://127.0.0.1:{port}/", {})
            get(session, f"http://127.0.0.1:{b}/", {"Cookie": "given=1"})
            assert not len(session.cookies), "the pooled session stores no cookie"
        with new_session(second.url) as session:
            get(session, f"http://127.0.0.1:{b}/", {})
    assert received[a] == [None, f"sid=from-{a}"]
    assert received[b][:3] == [None, f"sid=from-{b}", "given=1"], "the same host on another port gets none of a's"
    assert received[b][3] == f"sid=from-{b}", "the job's cookies outlive the session"
