"""Credentials inside URLs: recognised by their place, masked wherever the framework writes."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
import structlog

from common.interfaces.base_module import FetchedFile, FetchFailed, JobContext, Unchanged
from common.logger import configure_logging
from common.manifest import public_source
from common.retry import RetryPolicy
from common.secret import Secret, is_sensitive_name, redact, redact_url


@pytest.mark.parametrize(("text", "expected"), [
    ("http://u:pw1@h:1/x?token=t1&x=1", "http://u:***@h:1/x?token=***&x=1"),
    ("https://ghp_tok@github.com/a.git", "https://***@github.com/a.git"),
    ("GET /v1/x?api_key=k1 (Caused by x)", "GET /v1/x?api_key=*** (Caused by x)"),
    ("http://h/?X-Amz-Signature=s1&X-Amz-Credential=c1;sig=s2#frag",
     "http://h/?X-Amz-Signature=***&X-Amz-Credential=***;sig=***#frag"),
    ("http://h/?Api-Key=1&key=&page=2", "http://h/?Api-Key=***&key=&page=2"),
    ("http://h/?client_secret=a%2Fb&password=p", "http://h/?client_secret=***&password=***"),
])
def test_redact_url_masks_user_info_and_credential_parameters(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert redact_url(expected) == expected, "idempotent"


@pytest.mark.parametrize("text", [
    "s3://bucket/year=2024/key=5/x.csv",  # hive partitions are path segments, not a query
    "http://h/?page_token=abc&cursor=xyz&next=2",  # pagination parameters keep their values
    "mail me at user@example.com", "http://h/p@x", "a=b",
])
def test_redact_url_keeps_what_is_not_a_credential(text: str) -> None:
    assert redact_url(text) == text


def test_sensitive_names() -> None:
    assert all(map(is_sensitive_name, ["token", "API_KEY", "x-api-key", "X-Auth-Token", "access-token", "Sig"]))
    assert not any(map(is_sensitive_name, ["page", "page_token", "cursor", "monkey", "keyword", "city"]))


def test_redact_covers_known_secrets_and_url_secrets() -> None:
    known = Secret("known-value-6T1")
    assert redact(f"{known.reveal()} at http://h/?token=abc") == "*** at http://h/?token=***"


def test_source_uris_are_masked_when_a_module_hands_them_over(tmp_path: Path) -> None:
    uri = "http://u:pw@h/x?token=abc"
    fetched = FetchedFile(tmp_path / "f", "x.json", uri, 1, "0" * 64)
    failed = FetchFailed("x.json", uri, f"GET {uri}: HTTP 404")
    unchanged = Unchanged("x.json", uri, {})
    assert {fetched.source_uri, failed.source_uri, unchanged.source_uri} == {"http://u:***@h/x?token=***"}
    assert failed.error == "GET http://u:***@h/x?token=***: HTTP 404"


def test_file_names_in_other_schemes_are_not_read_as_queries(tmp_path: Path) -> None:
    names = [FetchedFile(tmp_path / "f", "a", f"s3://b/in/a?token={n}.csv", 1, "0" * 64).source_uri for n in (1, 2)]
    assert names == ["s3://b/in/a?token=1.csv", "s3://b/in/a?token=2.csv"], "two files keep two URIs"
    assert FetchedFile(tmp_path / "f", "a", "ftp://u:pw@h/x", 1, "0" * 64).source_uri == "ftp://u:***@h/x"


def test_previous_identities_are_found_by_the_unmasked_uri() -> None:
    ctx = JobContext(run_id="r", job_id="j", service_id="s", module="api", validators=None,  # type: ignore[arg-type]
                     retry=RetryPolicy(attempts=1, backoff_s=0, max_backoff_s=0), timeout_s=1,
                     stop=threading.Event(), previous={"http://h/x?token=***": {"etag": '"1"'}})
    assert ctx.previous.get("http://h/x?token=abc") == {"etag": '"1"'}
    assert "http://h/x?token=abc" in ctx.previous and "http://h/y" not in ctx.previous
    assert ctx.unchanged("http://h/x?token=abc", {"etag": '"1"'})


def test_public_source_masks_urls_and_credential_named_values() -> None:
    source = {"base_url": "http://u:pw@h:1", "endpoints": ("/x?token=t",), "query": {"api_key": "k", "city": "oslo"},
              "headers": {"X-Api-Key": "k2", "Accept": "application/json"}, "auth": {"type": "bearer",
                                                                                    "token": Secret("t3-secret")},
              "verify_tls": True, "max_response_bytes": 4}
    assert public_source(source) == {
        "base_url": "http://u:***@h:1", "endpoints": ["/x?token=***"], "query": {"api_key": "***", "city": "oslo"},
        "headers": {"X-Api-Key": "***", "Accept": "application/json"}, "auth": {"type": "bearer"},
        "verify_tls": True, "max_response_bytes": 4}


def test_log_records_quoting_urls_are_masked(tmp_path: Path) -> None:
    console = io.StringIO()
    configure_logging(tmp_path, "json", console)
    try:
        structlog.get_logger("tests.url_secrets").warning(
            "page_failed", url="http://h/a?token=abc123", error="HTTPConnectionPool: url: /a?api_key=xyz789",
            nested={"uris": ["ftp://user:pw4567@h/x"]})
    finally:
        configure_logging(None, "console", io.StringIO())
    record = json.loads(console.getvalue().strip().splitlines()[-1])
    assert record["url"] == "http://h/a?token=***" and record["error"].endswith("/a?api_key=***")
    assert record["nested"] == {"uris": ["ftp://user:***@h/x"]}
    text = console.getvalue() + "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert not any(s in text for s in ("abc123", "xyz789", "pw4567"))
