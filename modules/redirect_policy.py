"""Where an HTTP source may go, and what it may carry there: written once for ``api`` and ``web``.

Both modules send every request with redirects off (``allow_redirects=False``), so
``requests`` never re-sends anything on its own (its ``rebuild_auth`` strips only
``Authorization`` and only on a host change; a custom header such as ``X-Api-Key``
would follow a redirect anywhere). They follow a ``3xx`` by hand, asking
:meth:`RedirectPolicy.refusal` about each ``Location``, and ask
:meth:`RedirectPolicy.sends_credentials` before each request.

The rules (``docs/sources/api.md`` and ``docs/sources/web.md``, "Redirects"):

* **allowed hosts** (:class:`AllowedHosts`): an entry ``host:port`` admits that host on
  that port only. A bare ``host`` admits it on the default ports (80 and 443) and on the
  ports of the source's configured URLs with that host: ``allowed_hosts: [127.0.0.1]``
  beside ``urls: [http://127.0.0.1:8000/]`` admits ``127.0.0.1:8000`` but not ``:8001``.
* **no downgrade**: a redirect from ``https`` to ``http`` is never followed.
* **no link-local or cloud metadata address** (169.254.0.0/16, fe80::/10, fd00:ec2::/32,
  100.100.100.200, IPv4-mapped forms included): a redirect target whose host is such an
  address, or an allowed name resolving to one, is refused before any connection to it,
  unless that very address is written in ``allowed_hosts`` or in a configured URL. (The
  name is resolved once for the check and again by the connection: a DNS answer that
  changes in between is not caught.)
* **credentials stay home**: auth headers and secret headers go only to the *credential
  origins* (scheme, host and port of the configured URLs), and to the ``https`` form of an
  ``http`` origin on the default ports (the same host, now authenticated by TLS). Anywhere
  else a request carries no configured header at all.
* **cookies stay home too** (:class:`OriginCookiePolicy`, the policy of each job's cookie
  jar, :class:`~modules.http_sessions.JobCookies`): a cookie a server sets goes back only
  to the origin that set it (and its ``https`` form), not to the same host on another port
  or over ``http``, as the cookie rules of browsers would allow.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "AllowedHosts",
    "Origin",
    "OriginCookiePolicy",
    "RedirectPolicy",
    "is_metadata_address",
    "origin_of",
]

DEFAULT_PORTS = {"http": 80, "https": 443}
#: Answers whose ``Location`` may be followed by hand.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Redirect hops followed from one URL.
MAX_REDIRECTS = 5
#: Link-local and cloud metadata networks a redirect never reaches unless written down.
_METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::/32", "100.100.100.200/32"))

Resolver = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class Origin:
    """Scheme, host (lower case, IPv6 without brackets) and port (default filled in) of a URL."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin | None:
    """The origin of an http(s) ``url``; None when it has no usable scheme, host or port."""
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])


def _entry_host_port(entry: str) -> tuple[str, int | None]:
    """``(host, port or None)`` of an ``allowed_hosts`` entry: ``host``, ``host:port``,
    ``[v6]:port``, a bare IPv6 address, or a pasted URL."""
    entry = entry.strip().lower()
    if "://" not in entry and entry.count(":") > 1 and not entry.startswith("["):
        return entry, None  # a bare IPv6 address
    parts = urlsplit(entry if "://" in entry else "//" + entry)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or ""), port


class AllowedHosts:
    """Whether a URL's host and port are among ``allowed_hosts`` (rules: module docstring).

    ``configured``: the source's own URLs (start URLs, ``base_url``); their ports widen
    the bare-host entries naming their host.
    """

    def __init__(self, entries: Iterable[str], configured: Iterable[str] = ()) -> None:
        self._exact: set[tuple[str, int]] = set()
        self.written: set[str] = set()
        """Every host written in an entry or a configured URL (for the metadata rule)."""
        bare: set[str] = set()
        for entry in entries:
            host, port = _entry_host_port(entry)
            if not host:
                continue
            self.written.add(host)
            if port is None:
                bare.add(host)
            else:
                self._exact.add((host, port))
        for host in bare:
            self._exact.update({(host, 80), (host, 443)})
        for url in configured:
            origin = origin_of(url)
            if origin is not None:
                self.written.add(origin.host)
                if origin.host in bare:
                    self._exact.add((origin.host, origin.port))

    def allows(self, url: str) -> bool:
        origin = origin_of(url)
        return origin is not None and (origin.host, origin.port) in self._exact


def is_metadata_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is link-local or a cloud metadata address."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or any(ip in network for network in _METADATA_NETWORKS)


def _resolve(host: str) -> list[str]:
    """The addresses ``host`` resolves to (empty when it does not: the request then fails on its own)."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]
    except (OSError, UnicodeError):
        return []


class RedirectPolicy:
    """Redirect and credential rules of one source (see the module docstring).

    ``follow``: whether redirects are followed at all. ``resolve``: host name to
    addresses, for the metadata rule (``socket.getaddrinfo`` by default).
    """

    def __init__(self, allowed: AllowedHosts, credential_urls: Iterable[str], follow: bool = True,
                 resolve: Resolver = _resolve) -> None:
        self.allowed = allowed
        self.follow = follow
        self._resolve = resolve
        self._credential_origins: set[Origin] = set()
        for url in credential_urls:
            origin = origin_of(url)
            if origin is None:
                continue
            self._credential_origins.add(origin)
            if origin.scheme == "http" and origin.port == 80:
                self._credential_origins.add(Origin("https", origin.host, 443))

    def sends_credentials(self, url: str) -> bool:
        """Whether a request to ``url`` may carry the source's auth and secret headers."""
        return origin_of(url) in self._credential_origins

    def refusal(self, current: str, target: str) -> str | None:
        """Why the redirect from ``current`` to ``target`` is not followed, or None to follow it.

        Decided before any connection to ``target`` (a name is resolved, not connected to).
        """
        if not self.follow:
            return "redirects are not followed (follow_redirects is false)"
        origin, before = origin_of(target), origin_of(current)
        if origin is None:
            return "not an http(s) URL"
        if before is not None and before.scheme == "https" and origin.scheme == "http":
            return "a downgrade from https to http"
        literal = _is_ip(origin.host)
        if literal and self._metadata(origin.host):
            return f"host {origin.host} is a link-local or metadata address"
        if not self.allowed.allows(target):
            return f"host {_host_port(origin)} is not in allowed_hosts"
        if not literal:  # an allowed name: resolved (not connected to) for the metadata rule
            bad = next((a for a in self._resolve(origin.host) if self._metadata(a)), None)
            if bad is not None:
                return f"host {origin.host} resolves to {bad}, a link-local or metadata address"
        return None

    def _metadata(self, address: str) -> bool:
        """A link-local or metadata address that is not written in allowed_hosts or a configured URL."""
        return is_metadata_address(address) and address.lower() not in self.allowed.written


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _host_port(origin: Origin) -> str:
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    return f"{host}:{origin.port}"


class OriginCookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """The standard cookie rules, plus: a cookie is returned only to the origin that set it,
    or to the ``https`` form of an ``http`` origin on port 80 (``session.cookies.set_policy``)."""

    _ATTR = "x-module-system-origin"

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        if not super().set_ok(cookie, request):
            return False
        origin = origin_of(request.get_full_url())
        cookie._rest[self._ATTR] = str(origin) if origin else ""  # type: ignore[attr-defined]
        return True

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        origin = origin_of(request.get_full_url())
        home = cookie.get_nonstandard_attr(self._ATTR)
        if origin is None or home is None:
            return False
        upgraded = origin.scheme == "https" and origin.port == 443 and home == str(Origin("http", origin.host, 80))
        return (home == str(origin) or upgraded) and super().return_ok(cookie, request)
