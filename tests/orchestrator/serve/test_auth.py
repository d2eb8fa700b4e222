"""Tokens, scopes, the rate limit's bucket and the loopback rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.exceptions import ConfigError
from common.secret import known_secrets
from orchestrator.serve.auth import RateLimiter, TokenBucket, load_tokens
from orchestrator.serve.command import is_loopback

A = "a" * 16 + "-token"
B = "b" * 16 + "-token"


def test_tokens_from_the_environment_and_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# comment\n\n{A} read  # the monitoring\n{B} read, operate\n")
    tokens = load_tokens(path, {"MODULE_SYSTEM_API_READ_TOKEN": "c" * 20})
    assert tokens.scopes(A) == {"read"}
    assert tokens.scopes(B) == {"read", "operate"}
    assert tokens.scopes("c" * 20) == {"read"}
    assert tokens.scopes("d" * 20) is None
    assert {A, B} <= known_secrets(), "tokens are masked in the logs"
    assert A not in repr(tokens) and B not in repr(tokens)
    assert not load_tokens(None, {}).configured
    both = load_tokens(None, {"MODULE_SYSTEM_API_TOKEN": A})
    assert both.scopes(A) == {"read", "operate"}


@pytest.mark.parametrize(("text", "says"), [
    (f"{A}\n", "line 1: expected 'TOKEN SCOPES'"),
    (f"{A} read,admin\n", "line 1: unknown scope admin"),
    ("short read\n", "line 1: a token must be at least 16 characters"),
    (f"# first\n{A} ,\n", "line 2: unknown scope (none)"),
])
def test_a_bad_tokens_file_names_the_line_never_the_token(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_tokens(path, {})
    assert says in str(caught.value) and str(path) in str(caught.value)
    assert A not in str(caught.value) and "short" not in str(caught.value)


def test_an_unreadable_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tokens(tmp_path / "missing", {})


def test_the_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(capacity=2, rate=1.0, now=100.0)
    assert bucket.take(100.0) == 0 and bucket.take(100.0) == 0
    assert bucket.take(100.0) == pytest.approx(1.0)  # empty: one request a second
    assert bucket.take(100.5) == pytest.approx(0.5)
    assert bucket.take(101.0) == 0
    assert bucket.take(200.0) == 0 and bucket.take(200.0) == 0, "refilled to its capacity, never beyond"
    assert bucket.take(200.0) > 0


def test_the_rate_limiter_keeps_a_bucket_per_client() -> None:
    limiter = RateLimiter(per_minute=1)
    assert limiter.retry_after("alice") == 0
    assert limiter.retry_after("alice") >= 1
    assert limiter.retry_after("bob") == 0
    assert RateLimiter(per_minute=0).retry_after("alice") == 0


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.com", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
