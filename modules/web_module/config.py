"""The ``source_schema`` of the ``web`` module: every key of a ``type: web`` source, with its default.

Read once, at the config edge (:mod:`common.job_config`), which fills the defaults and
wraps the ``x-secret`` header values in :class:`~common.secret.Secret`; the module then
indexes the source directly. ``docs/CONFIGURATION.md`` is generated from it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SOURCE_SCHEMA"]

SOURCE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["urls"],
    "properties": {
        "urls": {"type": "array", "minItems": 1,
                 "items": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"},
                 "description": "Start URLs (http or https), fetched first, in order."},
        "follow": {"type": ["object", "null"], "default": None, "additionalProperties": False,
                   "required": ["selector"],
                   "description": "Links to follow from fetched pages; null follows none.",
                   "properties": {
                       "selector": {"type": "string", "minLength": 1,
                                    "description": "CSS selector of the links (elements with href, or "
                                                   "elements holding a[href])."},
                       "max_pages": {"type": "integer", "minimum": 0, "default": 50,
                                     "description": "Most pages requested through links, start URLs "
                                                    "not counted."},
                       "max_depth": {"type": "integer", "minimum": 0, "default": 3,
                                     "description": "Most link hops from a start URL (start URLs are "
                                                    "depth 0)."}}},
        "allowed_hosts": {"type": ["array", "null"], "default": None,
                          "items": {"type": "string", "minLength": 1},
                          "description": "Hosts that may be requested: 'host:port' (that port only) or 'host' "
                                         "(ports 80 and 443, and the start URLs' ports with that host); null: "
                                         "the hosts and ports of the start URLs."},
        "obey_robots": {"type": "boolean", "default": True,
                        "description": "Read each host's robots.txt and skip what it disallows."},
        "user_agent": {"type": "string", "minLength": 1,
                       "default": "module_system/0.1 (+https://example.invalid/module_system/bot)",
                       "description": "User-Agent header, also the name robots.txt rules are matched on."},
        "max_page_bytes": {"type": "integer", "minimum": 1, "default": 10 * 1024 * 1024,
                           "description": "Larger pages are skipped (checked while streaming)."},
        "extract": {"type": "object", "default": {},
                    "additionalProperties": {"type": "string", "minLength": 1},
                    "description": "Field name to CSS selector: a JSON record <page>.json of the text "
                                   "of each first match (or null) is written beside each page."},
        "headers": {"type": "object", "default": {},
                    "additionalProperties": {"type": "string", "x-secret": True},
                    "description": "Extra request headers (values are secret: never logged, sent only to "
                                   "the start URLs' origins)."},
        "verify_tls": {"type": "boolean", "default": True,
                       "description": "Verify https certificates; false only for trusted test servers."},
    },
}
