"""Errors of the web source module, and the translation of ``requests`` errors into them.

::

    SourceError                    common.exceptions
      WebSourceError               a page or the site cannot be read (TLS refused, bad URL, too many redirects)
        WebTransientError          + Transient: 408/429/5xx, refused/reset connections, timeouts;
                                   ``retry_after`` (seconds) from Retry-After, or on 429/503 from
                                   RateLimit-Reset / X-RateLimit-Reset (:mod:`modules.http_headers`)
        WebHttpError               a final HTTP error answer (401, 403, 404, 410, other 4xx); ``status``

Each carries keyword fields (``url``, ``status``, ``retry_after``), never a header value
(headers may hold tokens), and pickles.
"""

from __future__ import annotations

import requests

from module_system import RETRY_HTTP_CODES, SourceError, Transient
from modules.http_headers import retry_delay

__all__ = [
    "REDIRECT_STATUSES",
    "WebHttpError",
    "WebSourceError",
    "WebTransientError",
    "is_retryable_status",
    "raise_for_status",
    "translate_request_error",
]

#: Answers whose ``Location`` the module follows by hand.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_GONE = frozenset({404, 410})


class WebSourceError(SourceError):
    """A page or the site could not be read. Fields: ``url`` and, for HTTP answers, ``status``."""


class WebTransientError(WebSourceError, Transient):
    """A failure that retrying may cure. ``retry_after``: seconds asked by the server, or None."""


class WebHttpError(WebSourceError):
    """The server answered with a final error status (not retried). Field ``status``."""


def is_retryable_status(status: int) -> bool:
    """429, 408 and every 5xx: the server may answer differently later."""
    return status in RETRY_HTTP_CODES or 500 <= status < 600


def raise_for_status(response: requests.Response, url: str) -> None:
    """Raise WebTransientError for a retryable status (with the wait the answer asks for),
    WebHttpError for another 4xx/5xx; return for anything else."""
    status = response.status_code
    if is_retryable_status(status):
        raise WebTransientError(f"{url}: HTTP {status} {response.reason or ''}".rstrip(), url=url,
                                status=status, retry_after=retry_delay(status, response.headers))
    if status >= 400:
        what = "gone" if status in _GONE else "refused"
        raise WebHttpError(f"{url}: HTTP {status} {response.reason or ''} ({what})".rstrip(), url=url,
                           status=status)


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
