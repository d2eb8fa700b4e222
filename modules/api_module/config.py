"""The ``source_schema`` of the ``api`` module and the typed pagination settings read from it.

``auth`` and ``paginate`` are discriminated by their ``type``: every key any type may
use is listed under ``properties`` (so the config edge wraps the ``x-secret`` ones in
:class:`~common.secret.Secret`), and one ``if type == X then ...`` rule per type names
the keys that type requires and allows, so that a wrong block fails with one clear
line such as ``auth.token: required key is missing`` or ``auth.password: unknown key
(allowed: token, type)``.

Per-type defaults (``param`` is ``page`` for page pagination and ``cursor`` for cursor
pagination) live in :data:`PAGINATE_TYPES`, once: they appear in the schema's
``then`` branches for documentation, and :func:`paging_from` applies them. They cannot
be schema-level defaults, since the config edge fills defaults whatever the type is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AUTH_TYPES", "PAGINATE_TYPES", "SOURCE_SCHEMA", "Paging", "paging_from"]

#: auth type -> (required keys, optional keys); ``type`` itself is always allowed.
AUTH_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "none": ((), ()),
    "bearer": (("token",), ()),
    "header": (("name", "value"), ()),
    "basic": (("username", "password"), ()),
    "oauth2_client_credentials": (("token_url", "client_id", "client_secret"), ("scope", "client_auth")),
}

#: paginate type -> {allowed key: default or None (optional, no default)}.
PAGINATE_TYPES: dict[str, dict[str, Any]] = {
    "none": {},
    "link_header": {"max_pages": 1000},
    "page": {"param": "page", "start": 1, "size_param": None, "size": None, "max_pages": 1000},
    "cursor": {"param": "cursor", "cursor_path": "$.next_cursor", "max_pages": 1000},
}

_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


def _discriminated(types: Mapping[str, tuple[tuple[str, ...], Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One ``if type == X then required/allowed`` rule per type."""
    rules = []
    for name, (required, allowed) in types.items():
        props = {"type": True, **dict.fromkeys(required, True),
                 **{k: ({"default": v} if v is not None else True) for k, v in allowed.items()}}
        then: dict[str, Any] = {"properties": props, "additionalProperties": False}
        if required:
            then["required"] = list(required)
        rules.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then})
    return rules


_AUTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "How requests authenticate; discriminated by `type`.",
    "default": {"type": "none"},
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": list(AUTH_TYPES), "description": "none | bearer | header | basic | oauth2_client_credentials."},
        "token": {"type": "string", "minLength": 1, "x-secret": True,
                  "description": "bearer: sent as `Authorization: Bearer <token>`."},
        "name": {"type": "string", "pattern": _HEADER_NAME, "description": "header: the header's name (e.g. X-Api-Key)."},
        "value": {"type": "string", "minLength": 1, "x-secret": True, "description": "header: the header's value."},
        "username": {"type": "string", "description": "basic: the user name."},
        "password": {"type": "string", "x-secret": True, "description": "basic: the password."},
        "token_url": {"type": "string", "pattern": "^https?://",
                      "description": "oauth2_client_credentials: the token endpoint (POST, grant_type=client_credentials)."},
        "client_id": {"type": "string", "minLength": 1, "description": "oauth2_client_credentials: the client id."},
        "client_secret": {"type": "string", "minLength": 1, "x-secret": True,
                          "description": "oauth2_client_credentials: the client secret."},
        "scope": {"type": "string", "description": "oauth2_client_credentials: space-separated scopes to ask for."},
        "client_auth": {"enum": ["basic", "body"],
                        "description": "oauth2_client_credentials: send the client credentials as HTTP Basic "
                                       "(default, RFC 6749 2.3.1) or as client_id/client_secret form fields."},
    },
    "allOf": _discriminated({k: (req, dict.fromkeys(opt)) for k, (req, opt) in AUTH_TYPES.items()}),
}

_PAGINATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "How an endpoint's pages are walked; discriminated by `type`.",
    "default": {"type": "none"},
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": list(PAGINATE_TYPES), "description": "none | link_header | page | cursor."},
        "param": {"type": "string", "minLength": 1,
                  "description": "page/cursor: the query parameter carrying the page number (default `page`) "
                                 "or the cursor (default `cursor`)."},
        "start": {"type": "integer", "minimum": 0, "description": "page: number of the first page (default 1)."},
        "size_param": {"type": "string", "minLength": 1, "description": "page: query parameter for the page size."},
        "size": {"type": "integer", "minimum": 1, "description": "page: page size sent in `size_param`."},
        "cursor_path": {"type": "string", "minLength": 1,
                        "description": "cursor: dotted path to the next cursor in a page (default `$.next_cursor`); "
                                       "pagination stops when it is missing, null or empty."},
        "max_pages": {"type": "integer", "minimum": 1,
                      "description": "link_header/page/cursor: at most this many pages per endpoint (default 1000)."},
    },
    "allOf": [
        *_discriminated({k: ((), v) for k, v in PAGINATE_TYPES.items()}),
        {"if": {"required": ["size_param"]}, "then": {"required": ["size"]}},
        {"if": {"required": ["size"]}, "then": {"required": ["size_param"]}},
    ],
}

SOURCE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["base_url", "endpoints"],
    "properties": {
        "base_url": {"type": "string", "pattern": "^https?://[^/?#]+", "description":
                     "Scheme, host, port and optional base path; every endpoint is appended to it."},
        "endpoints": {"type": "array", "minItems": 1,
                      "items": {"type": "string", "pattern": "^/", "description": "A path with an optional query."},
                      "description": "Paths (starting with `/`, optionally with `?query`) fetched under base_url."},
        "auth": _AUTH_SCHEMA,
        "paginate": _PAGINATE_SCHEMA,
        "records_path": {"type": "string", "minLength": 1, "description":
                         "Dotted path to the records array in each page (`data.items`, `$.results`); each record "
                         "is then validated on its own and problems name its index. Absent: the page is one document."},
        "headers": {"type": "object", "default": {}, "additionalProperties": {"type": "string"},
                    "propertyNames": {"pattern": _HEADER_NAME},
                    "description": "Extra request headers (not secret: use auth for credentials)."},
        "query": {"type": "object", "default": {},
                  "additionalProperties": {"type": ["string", "number", "boolean"]},
                  "description": "Extra query parameters added to every request (an endpoint's own win)."},
        "verify_tls": {"type": "boolean", "default": True,
                       "description": "Verify HTTPS certificates; false logs a warning on every job."},
        "follow_redirects": {"type": "boolean", "default": False, "description":
                             "Follow 3xx answers of endpoints (never of token_url), at most 5 hops, only to "
                             "allowed_hosts, never from https to http nor to a link-local or metadata address; "
                             "auth and headers go only to base_url's origin. False: a 3xx fails its endpoint."},
        "allowed_hosts": {"type": ["array", "null"], "default": None, "items": {"type": "string", "minLength": 1},
                          "description": "Hosts a followed redirect may reach: 'host:port' (that port only) or "
                                         "'host' (ports 80 and 443, and base_url's port when it is that host); "
                                         "null: base_url's host and port."},
        "max_response_bytes": {"type": "integer", "minimum": 1, "default": 100 * 1024 * 1024,
                               "description": "A page larger than this fails its endpoint (default 100 MiB)."},
        "cursor": {"type": "object", "additionalProperties": False, "required": ["field", "param"],
                   "description": "Incremental by watermark: the newest `field` of the records read is kept in the "
                                  "service's state when the job succeeds and sent as the query parameter `param` "
                                  "on the next run (per endpoint). Needs records_path.",
                   "properties": {
                       "field": {"type": "string", "minLength": 1,
                                 "description": "Dotted path of the watermark in each record (`updated_at`, "
                                                "`meta.modified`); numbers compare as numbers, other values as "
                                                "text (ISO 8601 timestamps in one format and zone sort right)."},
                       "param": {"type": "string", "minLength": 1,
                                 "description": "Query parameter carrying the watermark (`since`, "
                                                "`updated_after`)."},
                       "initial": {"type": ["string", "number"],
                                   "description": "Sent on the first run, before any watermark is kept; absent: "
                                                  "the first run reads everything."}}},
    },
    "dependentRequired": {"cursor": ["records_path"]},
}


@dataclass(frozen=True)
class Paging:
    """The ``paginate`` block of a source, with its type's defaults applied."""

    type: str
    param: str | None = None
    start: int = 1
    size_param: str | None = None
    size: int | None = None
    cursor_path: str | None = None
    max_pages: int = 1
    """Pages fetched at most per endpoint (1 for ``none``)."""


def paging_from(block: Mapping[str, Any]) -> Paging:
    """Typed settings from a validated ``paginate`` block."""
    kind = block["type"]
    values = {k: block.get(k, default) for k, default in PAGINATE_TYPES[kind].items()}
    return Paging(type=kind, **values)
