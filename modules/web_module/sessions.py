"""HTTP sessions and cookies of the web module.

* :func:`new_session` makes the ``requests.Session`` the run keeps per host
  (``ctx.resources.pooled(("web", host), new_session)``): a request checks one out, uses it
  alone and gives it back, so keep-alive connections are reused across pages and jobs. A
  pooled session stores no cookies: it goes from job to job.
* :class:`JobCookies` holds the cookies of one job instead: whatever the sites set is sent
  back on the job's later requests (from any of its lanes), only to the origin that set it
  (:class:`~modules.redirect_policy.OriginCookiePolicy`), and never to another job.
"""

from __future__ import annotations

import http.cookiejar
from collections.abc import Mapping

import requests
import requests.adapters
import requests.structures
from requests.cookies import (
    RequestsCookieJar,
    extract_cookies_to_jar,
    get_cookie_header,
)

from modules.redirect_policy import OriginCookiePolicy

__all__ = ["JobCookies", "new_session"]


def new_session() -> requests.Session:
    """A session for one host, used by one request at a time: one connection, no retries of
    its own (``ctx.retry`` retries), no cookie kept (the job's :class:`JobCookies` keeps them)."""
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # refuses every cookie
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class JobCookies:
    """The cookies one job was given; thread-safe (the cookie jar locks itself)."""

    def __init__(self) -> None:
        self._jar = RequestsCookieJar(policy=OriginCookiePolicy())

    def header(self, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        """The ``Cookie`` header for a request to ``url``; none when ``headers`` already has one
        (a ``Cookie`` in the source's ``headers`` is sent as written) or no cookie applies."""
        if any(name.lower() == "cookie" for name in headers):
            return {}
        probe = requests.PreparedRequest()
        probe.prepare_url(url, None)
        probe.headers = requests.structures.CaseInsensitiveDict()
        value = get_cookie_header(self._jar, probe)
        return {"Cookie": value} if value else {}

    def keep(self, response: requests.Response) -> None:
        """Store the cookies ``response`` sets (its origin recorded with each)."""
        extract_cookies_to_jar(self._jar, response.request, response.raw)
