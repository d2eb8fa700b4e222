"""HTTP sessions and cookies of the web and api modules.

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
import os
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

__all__ = ["JobCookies", "new_session", "tls_verify"]


def tls_verify(verify_tls: bool) -> bool | str:
    """The ``verify`` of each request: False, or the CA bundle the environment names
    (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, as ``requests`` reads them), or True."""
    if not verify_tls:
        return False
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def new_session(url: str) -> requests.Session:
    """A session for the host of ``url``, used by one request at a time: one connection, no
    retries of its own (``ctx.retry`` retries), no cookie kept (the job's :class:`JobCookies`
    keeps them). The environment's proxies (``HTTPS_PROXY``, ``NO_PROXY``...) are read once,
    here, not on every request; ``~/.netrc`` is not read (credentials go in ``headers``)."""
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
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
        if not len(self._jar) or any(name.lower() == "cookie" for name in headers):
            return {}
        probe = requests.PreparedRequest()
        probe.prepare_url(url, None)
        probe.headers = requests.structures.CaseInsensitiveDict()
        value = get_cookie_header(self._jar, probe)
        return {"Cookie": value} if value else {}

    def keep(self, response: requests.Response) -> None:
        """Store the cookies ``response`` sets (its origin recorded with each)."""
        if "Set-Cookie" in response.headers or "Set-Cookie2" in response.headers:
            extract_cookies_to_jar(self._jar, response.request, response.raw)
