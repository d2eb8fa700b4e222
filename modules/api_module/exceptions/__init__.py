"""Errors of the API module, and the translation of HTTP replies and ``requests`` errors into them.

::

    SourceError                        common.exceptions
      ApiSourceError                   an endpoint or the whole API could not be read
        ApiHttpError                   a reply status not worth retrying (4xx but 408/429)
          ApiUnauthorizedError         401: credentials refused (refreshed once for oauth2)
        ApiTransientError              + Transient: 5xx, 408, refused/reset connections, timeouts;
                                       ``retry_after`` (seconds) when the reply asks for a wait
          ApiRateLimitedError          429
        ApiAuthError                   the OAuth2 token endpoint refused the client: fails the job
          ApiAuthTransientError        + Transient: the token endpoint is down or throttling

Every error carries fields (``url`` without credentials, ``status`` or None) and pickles.
Messages quote at most :data:`MAX_EXCERPT_CHARS` characters of a reply body, with every
known secret value scrubbed (:func:`common.secret.redact`); never a header.
"""

from __future__ import annotations

from typing import Any

from module_system import RETRY_HTTP_CODES, SourceError, Transient, redact
from modules.http_headers import retry_delay

__all__ = [
    "MAX_EXCERPT_CHARS",
    "ApiAuthError",
    "ApiAuthTransientError",
    "ApiHttpError",
    "ApiRateLimitedError",
    "ApiSourceError",
    "ApiTransientError",
    "ApiUnauthorizedError",
    "error_for_status",
    "translate_request_error",
]

#: Longest reply-body excerpt quoted in an error message.
MAX_EXCERPT_CHARS = 200


class ApiSourceError(SourceError):
    """An API endpoint (or the API) could not be read. Fields: ``url``, ``status``."""


class ApiHttpError(ApiSourceError):
    """The server answered with a status that retrying will not change (404, 403, 400, ...)."""


class ApiUnauthorizedError(ApiHttpError):
    """401: the credentials were refused."""


class ApiTransientError(ApiSourceError, Transient):
    """A failure that retrying may cure: 5xx, 408, a refused or reset connection, a timeout.

    ``retry_after``: seconds the reply asked to wait (sets the retry delay), or None/absent."""


class ApiRateLimitedError(ApiTransientError):
    """429 Too Many Requests."""


class ApiAuthError(ApiSourceError):
    """The OAuth2 token endpoint refused the client credentials, or answered nonsense.

    No endpoint can be read without a token, so this fails the job at once."""


class ApiAuthTransientError(ApiAuthError, Transient):
    """The token endpoint could not be reached, or answered 5xx/429, after retries."""


def excerpt(text: str | bytes) -> str:
    """One line of at most MAX_EXCERPT_CHARS characters, known secrets scrubbed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    line = redact(" ".join(text.split()))
    return line if len(line) <= MAX_EXCERPT_CHARS else line[: MAX_EXCERPT_CHARS - 3] + "..."


def error_for_status(status: int, url: str, body: bytes, headers: Any = None,
                     what: str = "GET") -> ApiSourceError:
    """The error for a non-2xx reply ``status`` to ``what url``, quoting an excerpt of ``body``."""
    text = excerpt(body)
    message = f"{what} {url}: HTTP {status}" + (f": {text}" if text else "")
    fields: dict[str, Any] = {"url": url, "status": status}
    if status == 401:
        return ApiUnauthorizedError(message, **fields)
    if status in RETRY_HTTP_CODES or status >= 500:
        # Retry-After, or on 429/503 RateLimit-Reset / X-RateLimit-Reset (modules.http_headers).
        wait = retry_delay(status, headers) if headers is not None else None
        cls = ApiRateLimitedError if status == 429 else ApiTransientError
        return cls(message, retry_after=wait, **fields)
    return ApiHttpError(message, **fields)


def translate_request_error(exc: BaseException, url: str, what: str = "GET") -> ApiSourceError:
    """The ApiSourceError for a ``requests`` exception; the caller raises it ``from exc``.

    Connection failures, timeouts and bodies cut off mid-stream are transient; a TLS
    failure (bad certificate), too many redirects or a malformed URL are not.
    """
    import requests

    detail = excerpt(str(exc).splitlines()[0] if str(exc) else "")
    message = f"{what} {url}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    fields: dict[str, Any] = {"url": url, "status": None}
    if isinstance(exc, requests.exceptions.SSLError):
        return ApiSourceError(message, **fields)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return ApiTransientError(message, **fields)
    return ApiSourceError(message, **fields)
