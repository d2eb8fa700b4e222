"""Secrets: values that never print.

Registry strings whose schema says ``"x-secret": true`` (passwords, tokens, keys) are
held as :class:`Secret`. ``str()``/``repr()`` give ``'***'``; only :meth:`Secret.reveal`
hands the value to the library that needs it. Every revealed value is also remembered
so that the log redaction processor can scrub it from any record that quotes it.

Secrets inside URLs are not registered anywhere (a ``base_url`` with ``?api_key=...``
is a plain string), so they are recognised by their place instead
(:func:`redact_url`, applied by :func:`redact` to any text):

* user info: ``scheme://user:pw@host`` becomes ``scheme://user:***@host``, and
  ``scheme://token@host`` (a token as the user name) becomes ``scheme://***@host``;
* query (or ``;``) parameters whose name is in :data:`SENSITIVE_NAMES` (compared in lower
  case, ``-`` read as ``_``, one leading ``x_`` ignored): ``?token=abc&x=1`` becomes
  ``?token=***&x=1``. Names are matched exactly, not as substrings, so pagination
  parameters such as ``page_token`` or ``cursor`` are kept (their values differ per page
  and keep the pages' source URIs apart).
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import unquote_plus

_known: set[str] = set()
_lock = threading.Lock()


class Secret:
    """A secret value. ``source``: the registry text it was read from when that names the
    environment (``${FTP_PASSWORD}``); then the secret pickles as that text alone and is read
    again from the environment of the process that unpickles it (a Dask worker's own), so
    its value never travels in a task. A secret written into the registry as it is has no
    source and pickles with its value (:func:`has_environment_source` tells them apart)."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str | None = None) -> None:
        self._value = value
        self._source = source if source and "${" in source else None
        if value:
            with _lock:
                _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._source is not None:
            return (_from_environment, (self._source,))
        return (Secret, (self._value,))

    @property
    def source(self) -> str | None:
        """The ``${VAR}`` text the value was read from, or None (written as it is)."""
        return self._source


def _from_environment(source: str) -> Secret:
    """A pickled secret read again from this process's environment (``source`` is its
    ``${VAR}`` text); ConfigError naming the variable when it is not set here."""
    from common.job_config import interpolate_environment

    return Secret(interpolate_environment(source), source)


def has_environment_source(value: Any) -> bool:
    """False for a Secret that would pickle with its value (see :class:`Secret`)."""
    return not isinstance(value, Secret) or not value._value or value._source is not None


def reveal(value: Any) -> Any:
    """``value.reveal()`` for a Secret, ``value`` itself otherwise."""
    return value.reveal() if isinstance(value, Secret) else value


def known_secrets() -> frozenset[str]:
    """Every secret value loaded in this process (for redaction)."""
    with _lock:
        return frozenset(_known)


#: Query parameter (and mapping key / header) names whose values are credentials; see the
#: module docstring for how a name is compared.
SENSITIVE_NAMES = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth_token", "api_token", "oauth_token",
    "private_token", "bearer", "jwt", "auth", "authorization", "api_key", "apikey", "key", "access_key",
    "secret_key", "secret", "client_secret", "app_secret", "password", "passwd", "pwd", "pass",
    "signature", "sig", "session_id", "sessionid", "credential", "credentials",
    "amz_signature", "amz_credential", "amz_security_token", "goog_signature", "goog_credential",
    "cookie",
})
MASK = "***"

# A value ends at the next parameter, fragment, blank or quote; one trailing ``:,.)`` before
# a blank stays outside it (``GET http://h/?token=abc: HTTP 404`` keeps its colon).
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#?\s\"'<>]+)=([^&;#\s\"'<>]*?)(?=[:,.)]?(?:[&;#\s\"'<>]|$))")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@\s\"'<>]+)@")


def is_sensitive_name(name: str) -> bool:
    """Whether a query parameter, header or mapping key named ``name`` holds a credential."""
    normal = unquote_plus(name).strip().lower().replace("-", "_")
    return normal in SENSITIVE_NAMES or (normal.startswith("x_") and normal[2:] in SENSITIVE_NAMES)


def _mask_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if not value or value == MASK or not is_sensitive_name(name):
        return match.group(0)
    return f"{sep}{name}={MASK}"


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, info = match.groups()
    user, colon, _ = info.partition(":")
    return f"{scheme}{user}:{MASK}@" if colon else f"{scheme}{MASK}@"


def redact_url(text: str) -> str:
    """``text`` (a URL, or any text quoting URLs) with the credentials inside URLs masked:
    user info passwords and the values of :data:`SENSITIVE_NAMES` query parameters."""
    if "=" in text:
        text = _QUERY_PARAM.sub(_mask_param, text)
    if "@" in text:
        text = _USERINFO.sub(_mask_userinfo, text)
    return text


#: Schemes whose ``?``, ``&`` and ``;`` start a query: elsewhere (``s3://``, ``ftp://``) they are
#: characters of a file name, and masking them could make two files' URIs alike.
_QUERY_SCHEMES = ("http://", "https://", "ws://", "wss://")


def redact_source_uri(uri: str) -> str:
    """A file's source URI with its credentials masked: :func:`redact_url` for an http(s) URL;
    for other schemes only the user info (``s3://b/a?token=1.csv`` names a file, not a query)."""
    if uri[:8].lower().startswith(_QUERY_SCHEMES):
        return redact_url(uri)
    return _USERINFO.sub(_mask_userinfo, uri) if "@" in uri else uri


def redact(text: str) -> str:
    """``text`` with every known secret value replaced by ``***``, and every credential
    inside a URL masked (:func:`redact_url`)."""
    for value in known_secrets():
        if value in text:
            text = text.replace(value, MASK)
    return redact_url(text)
