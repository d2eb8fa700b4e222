"""``robots.txt`` rules per origin, read once per job with :mod:`urllib.robotparser`.

The text itself is fetched by the caller (the web module's pooled session, host slot and
retry policy), so robots requests are as polite as page requests. Thread-safe: the lanes of a
job share one :class:`RobotsRules`; the first to need an origin's rules fetches them while
the others needing the same origin wait. What an answer means:

==========================  ===========================================================
``2xx``                     the rules in the body (at most :data:`MAX_ROBOTS_BYTES` read)
``401``, ``403``            everything is disallowed (the site forbids robots)
other ``4xx`` (``404``)     everything is allowed (there are no rules)
redirect off the allowed    treated as ``404``: nothing is requested from a host that
hosts, or too many          is not allowed, even for its ``robots.txt``
``5xx``, connection errors  raised by the fetcher after retries: the page fails
==========================  ===========================================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import requests
import structlog

from modules.web_module.exceptions import (
    REDIRECT_STATUSES,
    is_retryable_status,
    raise_for_status,
)

__all__ = ["MAX_ROBOTS_BYTES", "RobotsRules", "read_robots_answer"]

log = structlog.get_logger(__name__)

#: Bytes of a robots.txt that are parsed (Google reads 500 KiB); the rest is ignored.
MAX_ROBOTS_BYTES = 512 * 1024
#: Bytes read from a robots.txt body at a time.
CHUNK_SIZE = 64 * 1024

#: Fetches a robots.txt URL: (HTTP status, body text), or (404, "") when it cannot be reached
#: without leaving the allowed hosts. Raises a transient error when the server fails.
RobotsFetcher = Callable[[str], "tuple[int, str]"]


class RobotsRules:
    """Whether ``user_agent`` may fetch a URL; one parsed robots.txt per origin, loaded on first use."""

    def __init__(self, user_agent: str, fetch: RobotsFetcher) -> None:
        self.user_agent = user_agent
        self._fetch = fetch
        self._parsers: dict[str, RobotFileParser] = {}
        self._loading: dict[str, threading.Lock] = {}
        """One lock per origin, held while its robots.txt is fetched."""
        self._lock = threading.Lock()

    def allowed(self, url: str) -> bool:
        """True when robots.txt of the URL's origin lets ``user_agent`` fetch it."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            parser = self._parsers.get(origin)
            loading = self._loading.setdefault(origin, threading.Lock())
        if parser is None:
            with loading:
                with self._lock:
                    parser = self._parsers.get(origin)
                if parser is None:  # a failed fetch raises: the next page of the origin tries again
                    parser = self._load(origin)
                    with self._lock:
                        self._parsers[origin] = parser
        return parser.can_fetch(self.user_agent, url)

    def _load(self, origin: str) -> RobotFileParser:
        robots_url = f"{origin}/robots.txt"
        status, text = self._fetch(robots_url)
        parser = RobotFileParser(robots_url)
        if status in (401, 403):
            rules, lines = "disallow_all", ["User-agent: *", "Disallow: /"]
        elif 200 <= status < 300:
            rules, lines = "parsed", text.splitlines()
        else:
            rules, lines = "allow_all", []
        parser.parse(lines)
        parser.modified()  # can_fetch() refuses everything until the parser is marked read
        log.debug("web_robots_loaded", url=robots_url, status=status, rules=rules)
        return parser


def read_robots_answer(response: requests.Response) -> tuple[int, str, str | None]:
    """(status, text, redirect location) of a robots.txt answer; retryable statuses raise to be retried."""
    status = response.status_code
    if status in REDIRECT_STATUSES and response.headers.get("Location"):
        return status, "", response.headers["Location"]
    if is_retryable_status(status):
        raise_for_status(response, response.url)
    if not 200 <= status < 300:
        return status, "", None
    body = bytearray()
    for chunk in response.iter_content(CHUNK_SIZE):
        body += chunk
        if len(body) >= MAX_ROBOTS_BYTES:
            break
    return status, bytes(body[:MAX_ROBOTS_BYTES]).decode("utf-8", errors="replace"), None
