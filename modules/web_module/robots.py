"""``robots.txt`` rules per origin, read once per job with Protego (RFC 9309).

Protego matches as Google does and RFC 9309 says: ``*`` and ``$`` in paths
(``Disallow: /*.pdf$``), the longest matching rule wins (``Allow: /p/ok`` after
``Disallow: /p/``), and ``Crawl-delay`` is read; the standard library's parser gets the first
two wrong. A ``Crawl-delay`` (capped at :data:`MAX_CRAWL_DELAY_S`) is handed to
``on_crawl_delay`` once per origin: the web module makes it that host's politeness delay.

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

import requests
import structlog
from protego import Protego

from modules.web_module.exceptions import (
    REDIRECT_STATUSES,
    is_retryable_status,
    raise_for_status,
)

__all__ = ["MAX_CRAWL_DELAY_S", "MAX_ROBOTS_BYTES", "RobotsRules", "read_robots_answer"]

log = structlog.get_logger(__name__)

#: Bytes of a robots.txt that are parsed (Google reads 500 KiB); the rest is ignored.
MAX_ROBOTS_BYTES = 512 * 1024
#: The longest ``Crawl-delay`` honoured (seconds): a larger one would starve the job, not pace it.
MAX_CRAWL_DELAY_S = 30.0
#: Bytes read from a robots.txt body at a time.
CHUNK_SIZE = 64 * 1024

#: Fetches a robots.txt URL: (HTTP status, body text), or (404, "") when it cannot be reached
#: without leaving the allowed hosts. Raises a transient error when the server fails.
RobotsFetcher = Callable[[str], "tuple[int, str]"]


class RobotsRules:
    """Whether ``user_agent`` may fetch a URL; one parsed robots.txt per origin, loaded on first use."""

    def __init__(self, user_agent: str, fetch: RobotsFetcher,
                 on_crawl_delay: Callable[[str, float], None] | None = None) -> None:
        self.user_agent = user_agent
        self._fetch = fetch
        self._on_crawl_delay = on_crawl_delay
        """Called once per origin whose rules set a Crawl-delay: (origin, seconds, capped)."""
        self._parsers: dict[str, Protego] = {}
        self._loading: dict[str, threading.Lock] = {}
        """One lock per origin, held while its robots.txt is fetched."""
        self._lock = threading.Lock()

    def allowed(self, url: str) -> bool:
        """True when robots.txt of the URL's origin lets ``user_agent`` fetch it."""
        return bool(self._rules(url).can_fetch(url, self.user_agent))

    def crawl_delay(self, url: str) -> float | None:
        """The ``Crawl-delay`` the URL's origin asks of ``user_agent`` (seconds, uncapped), or None."""
        delay = self._rules(url).crawl_delay(self.user_agent)
        return float(delay) if delay is not None else None

    def _rules(self, url: str) -> Protego:
        """The parsed rules of the URL's origin, fetched on first use."""
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
        return parser

    def _load(self, origin: str) -> Protego:
        robots_url = f"{origin}/robots.txt"
        status, text = self._fetch(robots_url)
        if status in (401, 403):
            rules, body = "disallow_all", "User-agent: *\nDisallow: /\n"
        elif 200 <= status < 300:
            rules, body = "parsed", text
        else:
            rules, body = "allow_all", ""
        parser = Protego.parse(body)
        delay = parser.crawl_delay(self.user_agent)
        log.debug("web_robots_loaded", url=robots_url, status=status, rules=rules, crawl_delay=delay)
        if delay is not None and delay > 0 and self._on_crawl_delay is not None:
            self._on_crawl_delay(origin, min(float(delay), MAX_CRAWL_DELAY_S))
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
