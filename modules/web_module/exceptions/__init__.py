"""Errors of the web source module, and the translation of ``requests`` errors into them.

::

    SourceError                    common.exceptions
      WebSourceError               a page or the site cannot be read (TLS refused, bad URL, too many redirects)
        WebTransientError          + Transient: 408/429/5xx, refused/reset connections, timeouts;
                                   ``retry_after`` (seconds) from the Retry-After header when present
        WebHttpError               a final HTTP error answer (401, 403, 404, 410, other 4xx); ``status``

Each carries keyword fields (``url``, ``status``, ``retry_after``), never a header value
(headers may hold tokens), and pickles.
"""

from __future__ import annotations

import datetime as dt
import email.utils

import requests

from common.exceptions import RETRY_HTTP_CODES, SourceError, Transient

__all__ = [
    "WebHttpError",
    "WebSourceError",
    "WebTransientError",
    "is_retryable_status",
    "parse_retry_after",
    "translate_request_error",
]

#: Longest Retry-After we pass on (the retry policy caps it again with max_backoff_s).
MAX_RETRY_AFTER_S = 3600.0


class WebSourceError(SourceError):
    """A page or the site could not be read. Fields: ``url`` and, for HTTP answers, ``status``."""


class WebTransientError(WebSourceError, Transient):
    """A failure that retrying may cure. ``retry_after``: seconds asked by the server, or None."""


class WebHttpError(WebSourceError):
    """The server answered with a final error status (not retried). Field ``status``."""


def is_retryable_status(status: int) -> bool:
    """429, 408 and every 5xx: the server may answer differently later."""
    return status in RETRY_HTTP_CODES or 500 <= status < 600


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


def translate_request_error(exc: requests.RequestException, url: str) -> WebSourceError:
    """The most specific WebSourceError for a ``requests`` failure on ``url``."""
    reason = _one_line(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        # A certificate that does not verify will not verify on the next try either.
        return WebSourceError(f"{url}: TLS failure: {reason}; set verify_tls: false only for a trusted "
                              "test server", url=url)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader)):
        return WebSourceError(f"{url}: invalid request: {reason}", url=url)
    if isinstance(exc, requests.Timeout):
        return WebTransientError(f"{url}: timed out: {reason}", url=url, retry_after=None)
    # ConnectionError (refused, reset, DNS), ChunkedEncodingError (a body cut off), and the rest.
    return WebTransientError(f"{url}: connection failed: {type(exc).__name__}: {reason}", url=url,
                             retry_after=None)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
