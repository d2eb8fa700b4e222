"""HTTP header rules shared by the ``web`` and ``api`` modules, written once.

Two kinds of header are read here:

* **Wait hints** on an answer worth retrying (:func:`retry_delay`): ``Retry-After``
  (delta-seconds or an HTTP date) on any retryable status, and, when it is absent, on
  ``429`` and ``503`` only, ``RateLimit-Reset`` (IETF ``draft-ietf-httpapi-ratelimit-headers``,
  delta-seconds) and ``X-RateLimit-Reset`` (GitHub, Twitter and many others: delta-seconds
  or a Unix timestamp). A value above :data:`EPOCH_THRESHOLD` is read as a Unix timestamp
  (the delay is then ``timestamp - now``): no server asks to wait 31 years. The reset
  headers are not read on other statuses because some APIs send them on every answer,
  where they describe the quota window, not why a 500 failed. The delay is capped at
  :data:`MAX_RETRY_AFTER_S`; the retry policy caps it again with ``max_backoff_s``.
* **Version marks** for incremental runs: :func:`version_identity` turns ``ETag`` and
  ``Last-Modified`` into the file identity kept in the manifest (``etag``,
  ``last_modified``), and :func:`conditional_headers` turns a recorded identity back into
  ``If-None-Match`` / ``If-Modified-Since``, so an unchanged resource answers ``304``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import time
from collections.abc import Mapping

__all__ = [
    "EPOCH_THRESHOLD",
    "MAX_RETRY_AFTER_S",
    "RESET_STATUSES",
    "conditional_headers",
    "parse_reset",
    "parse_retry_after",
    "retry_delay",
    "version_identity",
]

#: Longest wait taken from a header, in seconds (the retry policy caps it again with max_backoff_s).
MAX_RETRY_AFTER_S = 3600.0
#: A reset value above this is a Unix timestamp (2001-09-09), not a number of seconds.
EPOCH_THRESHOLD = 1_000_000_000
#: Statuses on which RateLimit-Reset / X-RateLimit-Reset are read (Retry-After is read on any).
RESET_STATUSES = frozenset({429, 503})
#: Identity key -> the response header it is read from, and the request header that sends it back.
_VERSION_HEADERS = (("etag", "ETag", "If-None-Match"), ("last_modified", "Last-Modified", "If-Modified-Since"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]``, whatever the case of the stored name (requests' headers ignore case already)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date; None if absent or unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


def parse_reset(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``RateLimit-Reset`` / ``X-RateLimit-Reset`` value; None if absent or unusable.

    ``value`` is seconds from now, or a Unix timestamp when above EPOCH_THRESHOLD
    (``now``: the current Unix time, for tests). A timestamp in the past gives 0.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number > EPOCH_THRESHOLD:
        number = number - (time.time() if now is None else now)
    return min(max(0.0, number), MAX_RETRY_AFTER_S)


def retry_delay(status: int, headers: Mapping[str, str], now: dt.datetime | None = None) -> float | None:
    """Seconds the server asks to wait before retrying an answer with ``status``, or None.

    ``Retry-After`` first; then, on 429 and 503 only, ``RateLimit-Reset``, then
    ``X-RateLimit-Reset``. The first usable header wins.
    """
    delay = parse_retry_after(_header(headers, "Retry-After"), now)
    if delay is not None or status not in RESET_STATUSES:
        return delay
    epoch = now.timestamp() if now is not None else None
    for name in ("RateLimit-Reset", "X-RateLimit-Reset"):
        delay = parse_reset(_header(headers, name), epoch)
        if delay is not None:
            return delay
    return None


def version_identity(headers: Mapping[str, str]) -> dict[str, str]:
    """``{"etag": ..., "last_modified": ...}`` from a response's headers (only those present)."""
    identity = {}
    for key, header, _ in _VERSION_HEADERS:
        value = _header(headers, header)
        if value:
            identity[key] = value
    return identity


def conditional_headers(identity: Mapping[str, str] | None) -> dict[str, str]:
    """``If-None-Match`` / ``If-Modified-Since`` for a recorded identity; empty when it has neither mark."""
    if not identity:
        return {}
    return {request: identity[key] for key, _, request in _VERSION_HEADERS if identity.get(key)}
