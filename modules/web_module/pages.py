"""URLs and pages: normalisation, host matching, stable file names, links and extracted fields.

* :func:`normalize_url` gives the one spelling of a URL used for de-duplication, naming
  and requests: http(s) only, scheme and host in lower case, default port and fragment
  dropped, user info dropped (credentials go in ``headers``), empty path ``/``.
* :class:`AllowedHosts` (:mod:`modules.redirect_policy`) reads ``allowed_hosts`` entries:
  ``host:port`` matches that exact port; a bare ``host`` matches it on the default ports
  (80 for http, 443 for https) and on the ports of the start URLs with that host.
* :func:`page_name` is ``<host>/<slug of path and query>-<8 hex of sha1(url)>.html``
  (``<host>_<port>`` for a non-default port): safe as a key and a local path, the same on
  every run, and unique per URL thanks to the hash. Both are computed from the URL with
  its credentials masked (:func:`common.secret.redact_url`): a ``?token=`` value never
  becomes part of a key.
* :func:`parse_page` reads a downloaded page once for the links to follow, the
  ``extract`` fields and the ``validate.html`` rules, through
  :func:`common.html_tree.query_html` and its memory bound (a page over it raises
  :class:`~common.html_tree.HtmlTooLarge`): in one streaming pass when every selector is
  streamable, else on the page's tree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

from requests.utils import requote_uri

from module_system import (
    Css,
    HtmlFindings,
    HtmlQuery,
    Problem,
    compile_css,
    query_html,
    redact_url,
)
from modules.redirect_policy import AllowedHosts

__all__ = [
    "AllowedHosts",
    "HostMatcher",
    "ParsedPage",
    "compile_selector",
    "host_key",
    "normalize_url",
    "page_name",
    "parse_page",
    "record_name",
]

DEFAULT_PORTS = {"http": 80, "https": 443}
#: Longest slug kept in a file name (the hash keeps truncated names unique).
MAX_SLUG_CHARS = 80
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_HTML_SUFFIX = re.compile(r"\.(?:html?|xhtml)$", re.IGNORECASE)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """``url`` (resolved against ``base``) in canonical form, or None if it is not a usable http(s) URL."""
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:  # a bad port, an unbalanced IPv6 bracket
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return requote_uri(urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")))


def host_key(url: str) -> str:
    """``host:port`` of a normalised URL, the port always written (the politeness key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    return f"{netloc}:{parts.port or DEFAULT_PORTS.get(parts.scheme, 80)}"


def default_allowed_hosts(urls: Iterable[str]) -> tuple[str, ...]:
    """The hosts of the start URLs, as written in their normalised form (``host`` or ``host:port``)."""
    hosts: dict[str, None] = {}
    for url in urls:
        normal = normalize_url(url)
        if normal:
            hosts[urlsplit(normal).netloc] = None
    return tuple(hosts)


HostMatcher = AllowedHosts
"""The former name of :class:`~modules.redirect_policy.AllowedHosts`."""


def page_name(url: str) -> str:
    """``<host>/<slug>-<8 hex>.html`` for a normalised URL: safe, stable across runs, unique
    (URLs differing only in a masked credential share a name)."""
    url = redact_url(url)
    parts = urlsplit(url)
    host = _HOST_UNSAFE.sub("_", parts.hostname or "host").strip("_.") or "host"
    if parts.port is not None:
        host = f"{host}_{parts.port}"
    path = _HTML_SUFFIX.sub("", parts.path)
    slug = _SLUG_UNSAFE.sub("-", f"{path}?{parts.query}" if parts.query else path).strip("-._")
    slug = slug[:MAX_SLUG_CHARS].rstrip("-._") or "index"
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:8]
    return f"{host}/{slug}-{digest}.html"


def record_name(name: str) -> str:
    """The ``extract`` record beside page ``name``: same stem, ``.json``."""
    return name[: -len(".html")] + ".json" if name.endswith(".html") else name + ".json"


def compile_selector(selector: str) -> Css:
    """A compiled CSS selector; ValueError naming the selector when it is not valid CSS."""
    return compile_css(selector)


class PageCheck(Protocol):
    """Rules judged on the same pass that reads the links (the ``validate.html`` checker)."""

    query: HtmlQuery

    def judge(self, findings: HtmlFindings) -> list[Problem]: ...


@dataclass(frozen=True)
class ParsedPage:
    links: tuple[str, ...]
    """Normalised http(s) URLs of the links matched by ``follow.selector``, in document order, once each."""
    record: dict[str, str | None] | None
    """The ``extract`` fields (text of the first match, or None), or None without ``extract``."""
    problems: list[Problem] | None = None
    """What ``check`` found in the same pass, or None without ``check``."""


def parse_page(path: Path, url: str, follow: Css | None, extract: Mapping[str, Css],
               check: PageCheck | None = None) -> ParsedPage:
    """Links and extracted fields of the page at ``path``, fetched from ``url`` (after redirects),
    and, when the page is read anyway, ``check`` (the ``validate.html`` rules) judged on the
    same pass, so the page is not read a second time to be validated.

    A matched element with an ``href`` gives that link; a matched element without one
    gives the ``a[href]`` inside it. Links resolve against ``<base href>`` when present.
    Raises :class:`~common.html_tree.HtmlTooLarge` when the page is over the parse bound.
    """
    if follow is None and not extract:
        return ParsedPage((), None)
    rules = check.query if check is not None else HtmlQuery()
    found = query_html(path, HtmlQuery(links=follow, texts=extract, present=rules.present, title=rules.title,
                                       text_chars=rules.text_chars))
    links: dict[str, None] = {}
    if follow is not None:
        base = urljoin(url, found.base_href) if found.base_href is not None else url
        for href in found.hrefs:
            target = normalize_url(href, base)
            if target is not None:
                links.setdefault(target, None)
    record = dict(found.texts) if extract else None
    return ParsedPage(tuple(links), record, check.judge(found) if check is not None else None)
