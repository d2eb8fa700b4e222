"""Request authentication for the ``api`` module: the ``auth`` block of a source.

Config keys read (``source.auth``): ``type`` and, per type, ``token`` (bearer),
``name``/``value`` (header), ``username``/``password`` (basic), ``token_url``/
``client_id``/``client_secret``/``scope``/``client_auth`` (oauth2_client_credentials).

Each authenticator gives the headers of one request and a *marker* naming the
credentials used, so that a 401 can invalidate exactly those (:meth:`Auth.invalidate`).
Every computed header value is wrapped in :class:`~common.secret.Secret` once, which
registers it for log redaction; values are revealed only into the request headers.

OAuth2 client-credentials tokens are fetched once per run for each (token_url,
client_id, client_secret, scope): every job and lane using the same credentials shares
the token (a :class:`TokenStore` kept in the run's resources, ``ctx.resources.shared``).
Its lock makes one lane fetch while the others wait. A token is refreshed when
``expires_in`` has (nearly) run out, or after a 401. A token request goes through the
same ``connect`` as page requests (a connection slot of the token host, so ``limits``,
``rate_limit`` and ``limits.delay_s`` hold for it too, and a pooled session).

The token request never follows a redirect: a ``3xx`` from ``token_url`` is an
:class:`ApiAuthError` naming the URL and where it pointed (the client secret would be
posted there otherwise). It carries the source's ``headers`` only when ``token_url``
is on ``base_url``'s origin (``headers_for``, from :mod:`modules.redirect_policy`).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import requests
import structlog

from module_system import RetryPolicy, Secret, redact_url, reveal
from modules.api_module.exceptions import (
    ApiAuthError,
    ApiAuthTransientError,
    ApiTransientError,
    error_for_status,
    translate_request_error,
)

__all__ = ["Auth", "OAuth2ClientCredentials", "TokenStore", "auth_for"]

log = structlog.get_logger(__name__)

#: A token is refreshed this fraction of its lifetime early (at most EXPIRY_SKEW_MAX_S seconds).
EXPIRY_SKEW = 0.1
EXPIRY_SKEW_MAX_S = 30.0


class Auth(Protocol):
    """What the module asks of an authenticator."""

    refreshable: bool
    """Whether a 401 is worth one more try with fresh credentials."""

    def headers(self) -> tuple[dict[str, str], object]:
        """Headers for one request, and a marker of the credentials they carry."""

    def invalidate(self, marker: object) -> None:
        """Forget the credentials ``marker`` names (a 401 came back for them)."""


class StaticAuth:
    """Fixed headers: none, bearer, header and basic."""

    refreshable = False

    def __init__(self, headers: Mapping[str, Secret]) -> None:
        self._headers = dict(headers)

    def headers(self) -> tuple[dict[str, str], object]:
        return {name: value.reveal() for name, value in self._headers.items()}, None

    def invalidate(self, marker: object) -> None:
        """Static credentials cannot be refreshed."""


@dataclass(frozen=True)
class _Token:
    value: Secret
    expires_at: float | None
    """``time.monotonic()`` after which the token is refreshed; None: never."""

    def expired(self) -> bool:
        return self.expires_at is not None and time.monotonic() >= self.expires_at


class TokenStore:
    """The token of one set of client credentials, shared by the jobs of a run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: _Token | None = None


#: Opens a connection to a URL's host for one request: a slot of the host and a pooled session.
Connect = Callable[[str], AbstractContextManager[requests.Session]]


class OAuth2ClientCredentials:
    """RFC 6749 section 4.4: a bearer token from ``token_url``, shared by the jobs of a run."""

    refreshable = True

    def __init__(self, block: Mapping[str, Any], connect: Connect, retry: RetryPolicy, timeout_s: float,
                 stores: Callable[[Any], TokenStore],
                 headers_for: Callable[[str], Mapping[str, str]] | None = None) -> None:
        self.token_url: str = block["token_url"]
        self._headers_for = headers_for
        self._client_id: str = block["client_id"]
        self._client_secret: Secret = _secret(block["client_secret"])
        self._scope: str | None = block.get("scope") or None
        self._client_auth: str = block.get("client_auth", "basic")
        self._connect = connect
        self._retry = retry
        self._timeout_s = timeout_s
        self._refused: ApiAuthError | None = None
        # Secrets hash by value, so equal credentials share one store without printing.
        self._store = stores(("oauth2", self.token_url, self._client_id, self._client_secret, self._scope,
                              self._client_auth))

    def headers(self) -> tuple[dict[str, str], object]:
        token = self._current()
        return {"Authorization": "Bearer " + token.value.reveal()}, token

    def invalidate(self, marker: object) -> None:
        with self._store.lock:
            if self._store.token is marker:
                self._store.token = None
                log.info("oauth2_token_invalidated", token_url=self.token_url, client_id=self._client_id)

    def _current(self) -> _Token:
        with self._store.lock:
            if self._refused is not None:  # asked once for this job: its other lanes need not ask again
                raise self._refused
            token = self._store.token
            if token is None or token.expired():
                try:
                    token = self._retry.call(self._request_token, what=f"POST {self.token_url}")
                except ApiAuthError as exc:
                    if not isinstance(exc, ApiAuthTransientError):
                        self._refused = exc
                    raise
                self._store.token = token
            return token

    def _request_token(self) -> _Token:
        data = {"grant_type": "client_credentials"}
        if self._scope:
            data["scope"] = self._scope
        auth: tuple[str, str] | None = None
        if self._client_auth == "body":
            data.update(client_id=self._client_id, client_secret=self._client_secret.reveal())
        else:
            auth = (self._client_id, self._client_secret.reveal())
        headers = {**(self._headers_for(self.token_url) if self._headers_for else {}), "Accept": "application/json"}
        try:
            with self._connect(self.token_url) as session, \
                    session.post(self.token_url, data=data, auth=auth, timeout=self._timeout_s,
                                 headers=headers, allow_redirects=False) as response:
                if response.is_redirect:
                    location = redact_url(response.headers.get("Location", ""))
                    raise ApiAuthError(f"POST {redact_url(self.token_url)}: HTTP {response.status_code} redirect to "
                                       f"{location!r} not followed: token requests never follow redirects",
                                       url=redact_url(self.token_url), status=response.status_code)
                if response.status_code != 200:
                    raise _token_error(error_for_status(response.status_code, self.token_url, response.content[:1024],
                                                       response.headers, what="POST"))
                try:
                    body = response.json()
                except ValueError:
                    body = None
        except requests.RequestException as exc:
            raise _token_error(translate_request_error(exc, self.token_url, what="POST")) from exc
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise ApiAuthError(f"POST {self.token_url}: the token response has no access_token",
                               url=self.token_url, status=200)
        value = Secret(access)  # registered for redaction before anything can log it
        expires_at = _expiry(body.get("expires_in"))
        log.info("oauth2_token_fetched", token_url=self.token_url, client_id=self._client_id,
                 expires_in=body.get("expires_in") if isinstance(body.get("expires_in"), (int, float)) else None)
        return _Token(value, expires_at)


def _token_error(exc: BaseException) -> ApiAuthError:
    """A token endpoint failure as an auth error: transient ones stay transient (after retries)."""
    fields = {"url": getattr(exc, "url", None), "status": getattr(exc, "status", None)}
    message = f"OAuth2 token request failed: {exc}"
    if isinstance(exc, ApiTransientError):
        return ApiAuthTransientError(message, retry_after=getattr(exc, "retry_after", None), **fields)
    return ApiAuthError(message, **fields)


def _expiry(expires_in: Any) -> float | None:
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return None
    seconds = max(0.0, seconds)
    return time.monotonic() + seconds - min(EXPIRY_SKEW_MAX_S, seconds * EXPIRY_SKEW)


def _secret(value: Any) -> Secret:
    return value if isinstance(value, Secret) else Secret(str(value))


def auth_for(block: Mapping[str, Any], connect: Connect, retry: RetryPolicy, timeout_s: float,
             stores: Callable[[Any], TokenStore],
             headers_for: Callable[[str], Mapping[str, str]] | None = None) -> Auth:
    """The authenticator of a validated ``auth`` block. ``connect(url)`` opens a connection for one
    request (host slot and pooled session), ``stores(key)`` gives the run's :class:`TokenStore` for
    a set of credentials, ``headers_for`` gives the source's headers that a request to a URL may carry."""
    kind = block["type"]
    if kind == "none":
        return StaticAuth({})
    if kind == "bearer":
        return StaticAuth({"Authorization": Secret("Bearer " + reveal(block["token"]))})
    if kind == "header":
        return StaticAuth({block["name"]: _secret(block["value"])})
    if kind == "basic":
        pair = f"{block['username']}:{reveal(block['password'])}".encode()
        return StaticAuth({"Authorization": Secret("Basic " + base64.b64encode(pair).decode("ascii"))})
    if kind == "oauth2_client_credentials":
        return OAuth2ClientCredentials(block, connect, retry, timeout_s, stores, headers_for)
    raise ValueError(f"unknown auth type {kind!r}")  # the schema rules this out
