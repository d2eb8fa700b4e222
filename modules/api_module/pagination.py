"""URLs, page names and page walking rules of the ``api`` module (pure functions, no I/O).

Config keys read: ``base_url``, ``endpoints``, ``query`` (through :func:`endpoint_url`),
``paginate`` (through :class:`~modules.api_module.config.Paging`) and ``records_path``.

Pagination is sequential per endpoint; these functions decide what the next request is:

* ``link_header``: the RFC 8288 ``rel="next"`` link, resolved against the page's URL;
  a link to another origin than ``base_url`` is refused (credentials would follow it);
* ``page``: ``param`` = start, start+1, ...; stop at an empty page;
* ``cursor``: ``param`` = the value at ``cursor_path`` of the previous page; stop when
  it is missing, null or empty, or repeats.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from module_system import redact_url
from modules.api_module.config import Paging

__all__ = [
    "MISSING",
    "dotted_get",
    "endpoint_slug",
    "endpoint_url",
    "is_empty_page",
    "newest_value",
    "next_cursor",
    "page_name",
    "public_url",
    "resolve_next_link",
    "same_origin",
    "with_params",
]

MISSING: Any = object()
"""What :func:`dotted_get` returns for a path that is not in the document."""

_SLUG_CHARS = re.compile(r"[^A-Za-z0-9]+")
_SINCE_CHARS = re.compile(r"[^A-Za-z0-9.-]+")
_SLUG_MAX = 60


def endpoint_slug(endpoint: str) -> str:
    """A safe, stable file-name stem for ``endpoint``, unique per distinct endpoint string.

    ``/v1/weather?city=paris`` -> ``v1-weather-city-paris-1b2c3d4e`` (the suffix is 8 hex
    of the endpoint's SHA-1, so endpoints that read alike still differ). Both are taken
    from the endpoint with its credentials masked (``?api_key=...`` reads ``api_key=***``,
    :func:`common.secret.redact_url`): no secret value becomes part of a key.
    """
    endpoint = redact_url(endpoint)
    text = _SLUG_CHARS.sub("-", endpoint).strip("-").lower()[:_SLUG_MAX].strip("-") or "root"
    return f"{text}-{hashlib.sha1(endpoint.encode('utf-8')).hexdigest()[:8]}"


def page_name(endpoint: str, number: int, since: Any = None) -> str:
    """``<endpoint-slug>-p<number>.json``: the file (and key suffix) of one page; with a cursor
    watermark ``since``, ``<endpoint-slug>-since-<value>-p<number>.json`` (the value made safe)."""
    if since is None:
        return f"{endpoint_slug(endpoint)}-p{number}.json"
    mark = _SINCE_CHARS.sub("_", str(since)).strip("_")[:_SLUG_MAX] or "none"
    return f"{endpoint_slug(endpoint)}-since-{mark}-p{number}.json"


def newest_value(path: Path, records_path: str, field: str, newest: Any = MISSING) -> Any:
    """The newest ``field`` (a dotted path) of the records at ``records_path`` in the JSON page at
    ``path``, or ``newest`` if none is newer. Numbers compare as numbers; anything else (and a mix)
    as text. A page that is not JSON, or whose records lack the field, changes nothing."""
    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return newest
    records = dotted_get(document, records_path)
    if not isinstance(records, list):
        return newest
    for record in records:
        value = dotted_get(record, field)
        if value is MISSING or value is None or isinstance(value, (bool, dict, list)):
            continue
        if newest is MISSING or _later(value, newest):
            newest = value
    return newest


def _later(value: Any, than: Any) -> bool:
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(than, numbers):
        return value > than
    return str(value) > str(than)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def endpoint_url(base_url: str, endpoint: str, query: Mapping[str, Any]) -> str:
    """``base_url`` + ``endpoint`` (its path appended to the base path), plus ``query`` keys it lacks."""
    path, _, own_query = endpoint.partition("?")
    own_query = own_query.partition("#")[0]
    pairs = parse_qsl(own_query, keep_blank_values=True)
    present = {name for name, _ in pairs}
    pairs += [(name, _query_value(value)) for name, value in query.items() if name not in present]
    url = base_url.rstrip("/") + path
    return url + ("?" + urlencode(pairs) if pairs else "")


def with_params(url: str, params: Mapping[str, Any]) -> str:
    """``url`` with each of ``params`` set (replacing a value already there)."""
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    pairs += [(k, _query_value(v)) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


@functools.lru_cache(maxsize=256)
def public_url(url: str) -> str:
    """``url`` without user info (``user:pass@``) or fragment, the values of credential query
    parameters masked (``?token=***``): safe for logs, errors and manifests. (Cached: a page's
    URL is asked for by the walk, the client and each request.)"""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return redact_url(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


def same_origin(url: str, other: str) -> bool:
    """Whether both URLs have the same scheme, host and port."""
    return _origin(url) == _origin(other)


def resolve_next_link(links: Mapping[str, Mapping[str, str]], page_url: str) -> str | None:
    """The absolute ``rel="next"`` URL of a page (``requests``' ``response.links``), or None."""
    target = links.get("next", {}).get("url")
    return urljoin(page_url, target) if target else None


def dotted_get(document: Any, path: str) -> Any:
    """The value at a simple dotted path (``$.data.items``, ``meta.next``, ``items.0``), or MISSING."""
    steps = path.strip().removeprefix("$")
    value = document
    for step in (s for s in steps.split(".") if s):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.lstrip("-").isdigit() and -len(value) <= int(step) < len(value):
            value = value[int(step)]
        else:
            return MISSING
    return value


def is_empty_page(document: Any, records_path: str | None) -> bool:
    """Whether a page ends ``page`` pagination: ``[]``, ``{}``, null, or no records at ``records_path``."""
    if records_path:
        records = dotted_get(document, records_path)
        if isinstance(records, list):
            return not records
    return document in ([], {}, None)


def next_cursor(document: Any, paging: Paging) -> str | None:
    """The cursor for the page after ``document``, or None when pagination ends."""
    value = dotted_get(document, paging.cursor_path or "$.next_cursor")
    if value is MISSING or value is None or value == "" or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return None
    return str(value)
