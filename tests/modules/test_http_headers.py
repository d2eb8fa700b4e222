"""The header rules shared by the web and api modules: wait hints and version marks."""

from __future__ import annotations

import datetime as dt

import pytest
from requests.structures import CaseInsensitiveDict

from modules.http_headers import (
    MAX_RETRY_AFTER_S,
    conditional_headers,
    parse_reset,
    parse_retry_after,
    retry_delay,
    version_identity,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
EPOCH = NOW.timestamp()


def test_retry_after_seconds_date_and_garbage() -> None:
    assert parse_retry_after("120") == 120.0 and parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", NOW) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", NOW) == 0.0, "a date in the past: no wait"
    assert parse_retry_after("999999") == MAX_RETRY_AFTER_S
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("-1") is None


@pytest.mark.parametrize(("value", "expected"), [
    ("7", 7.0),
    ("1.5", 1.5),
    ("0", 0.0),
    (str(int(EPOCH) + 42), 42.0),          # a Unix timestamp: the time left until it
    (str(int(EPOCH) - 42), 0.0),           # a timestamp already past
    ("1000000000", MAX_RETRY_AFTER_S),     # at the threshold: still seconds (capped)
    ("9999999", MAX_RETRY_AFTER_S),
    ("-3", None), ("soon", None), ("nan", None), ("inf", None), ("", None), (None, None),
])
def test_reset_is_seconds_or_a_unix_timestamp(value: str | None, expected: float | None) -> None:
    assert parse_reset(value, now=EPOCH) == expected


def test_retry_after_wins_then_ratelimit_reset_then_x_ratelimit_reset() -> None:
    both = {"Retry-After": "3", "RateLimit-Reset": "9", "X-RateLimit-Reset": "11"}
    assert retry_delay(429, both, NOW) == 3.0
    assert retry_delay(429, {"RateLimit-Reset": "9", "X-RateLimit-Reset": "11"}, NOW) == 9.0
    assert retry_delay(503, {"X-RateLimit-Reset": str(int(EPOCH) + 5)}, NOW) == 5.0
    assert retry_delay(429, {"RateLimit-Reset": "later", "X-RateLimit-Reset": "4"}, NOW) == 4.0, "unusable: next one"
    assert retry_delay(429, {}, NOW) is None


def test_reset_headers_count_on_429_and_503_only() -> None:
    quota = {"X-RateLimit-Reset": "30", "RateLimit-Reset": "30"}
    assert retry_delay(500, quota, NOW) is None and retry_delay(502, quota, NOW) is None
    assert retry_delay(500, {"Retry-After": "2", **quota}, NOW) == 2.0, "Retry-After counts on any status"


def test_header_names_are_matched_whatever_their_case() -> None:
    assert retry_delay(429, {"ratelimit-reset": "6"}, NOW) == 6.0
    assert retry_delay(429, CaseInsensitiveDict({"x-ratelimit-reset": "8"}), NOW) == 8.0
    assert version_identity({"etag": '"v1"', "last-modified": "Thu, 01 Jan 2026 12:00:00 GMT"}) == {
        "etag": '"v1"', "last_modified": "Thu, 01 Jan 2026 12:00:00 GMT"}


def test_version_marks_round_trip_into_conditional_headers() -> None:
    identity = version_identity(CaseInsensitiveDict({"ETag": 'W/"abc"', "Content-Type": "text/html"}))
    assert identity == {"etag": 'W/"abc"'}
    assert conditional_headers(identity) == {"If-None-Match": 'W/"abc"'}
    assert conditional_headers({"last_modified": "Thu, 01 Jan 2026 12:00:00 GMT", "size": "9"}) == {
        "If-Modified-Since": "Thu, 01 Jan 2026 12:00:00 GMT"}
    assert conditional_headers({"size": "9", "etag": ""}) == {} and conditional_headers(None) == {}
    assert version_identity({}) == {}
