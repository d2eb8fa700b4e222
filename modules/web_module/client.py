"""The HTTP side of one web job: every GET it sends, in a slot of its host, on a pooled session.

:meth:`WebClient.get` is the only way the module reaches the network (pages, redirect hops,
retries and ``robots.txt``):

* it holds ``ctx.slot(url)`` for the whole request: the run's per-host limiter
  (:mod:`common.host_limiter`) caps connections to the host across all jobs and lanes and
  spaces request starts by ``limits.delay_s`` and ``rate_limit``;
* it checks out the run's ``requests.Session`` for the host (``ctx.resources.pooled``,
  :func:`~modules.http_sessions.new_session`) for that request only;
* it sends the User-Agent, the secret ``headers`` only to the start URLs' origins
  (:meth:`~modules.redirect_policy.RedirectPolicy.sends_credentials`) and the job's cookies
  (:class:`~modules.http_sessions.JobCookies`), never follows a redirect itself;
* the body is read under the transfer watchdog (:func:`common.transfer_watchdog.watch`): a
  stopping run or a stalled server cuts it.

Thread-safe: the lanes of a job share one client.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urljoin

import requests
import structlog

from module_system import (
    JobContext,
    SourceConfig,
    Transfer,
    host_of,
    reveal,
    shut_response,
    watch,
)
from modules.http_sessions import JobCookies, new_session, tls_verify
from modules.redirect_policy import MAX_REDIRECTS, RedirectPolicy
from modules.web_module.exceptions import WebTransientError, translate_request_error
from modules.web_module.pages import normalize_url
from modules.web_module.robots import read_robots_answer

__all__ = ["Halted", "WebClient"]

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Halted(Exception):
    """The crawl has ended (stop, a source failure, or the framework stopped asking): a
    request that got its slot only now is not sent."""


class WebClient:
    def __init__(self, source: SourceConfig, ctx: JobContext, policy: RedirectPolicy) -> None:
        self.ctx = ctx
        self._policy = policy
        self._secret_headers = {str(k): str(reveal(v)) for k, v in source["headers"].items()}
        self._user_agent: str = source["user_agent"]
        self._verify = tls_verify(source["verify_tls"])
        self._cookies = JobCookies()
        self.halt = threading.Event()
        """Set when the crawl has ended: requests not yet sent raise :class:`Halted`."""

    def get(self, url: str, take: Callable[[requests.Response, Transfer], T],
            headers: Mapping[str, str] | None = None) -> T:
        """One GET of ``url`` (redirects not followed); ``take`` reads the answer. ``headers``
        are added to the source's. Raises the module's errors (``WebTransientError`` when
        retrying may help), TransferStopped when the run stops, Halted (see above)."""
        with self.ctx.slot(url):
            if self.halt.is_set():
                raise Halted()
            sent = {**self._headers_for(url), **(headers or {})}
            sent.update(self._cookies.header(url, sent))
            # A session is only a connection pool: after an error it is still fine (urllib3 drops
            # a broken connection), so it goes back to the pool.
            with self.ctx.resources.pooled(("web", host_of(url)), functools.partial(new_session, url),
                                           keep_on_error=True) as session:
                try:
                    response = session.get(url, headers=sent, timeout=(self.ctx.timeout_s, self.ctx.timeout_s),
                                           allow_redirects=False, stream=True, verify=self._verify)
                except requests.RequestException as exc:
                    raise translate_request_error(exc, url) from exc
                try:
                    self._cookies.keep(response)
                    with watch(f"GET {url}", self.ctx.stop, self.ctx.timeout_s, cut=lambda: shut_response(response),
                               stalled=lambda msg: WebTransientError(msg, url=url, retry_after=None)) as transfer:
                        return take(response, transfer)
                except requests.RequestException as exc:
                    raise translate_request_error(exc, url) from exc
                finally:
                    response.close()

    def robots_text(self, url: str) -> tuple[int, str]:
        """(status, text) of a robots.txt, retried per ``ctx.retry``, redirects followed within
        the redirect policy (off it: ``(404, "")``, as if there were none)."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            status, text, location = self.ctx.retry.call(self.get, current, _read_robots, what=f"GET {current}")
            if location is None:
                return status, text
            target = normalize_url(urljoin(current, location))
            refusal = self._policy.refusal(current, target) if target is not None else "not an http(s) URL"
            if refusal is not None or target is None:
                log.info("web_robots_redirect_not_followed", url=current, location=location, reason=refusal)
                return 404, ""
            current = target
        return 404, ""

    def _headers_for(self, url: str) -> dict[str, str]:
        """The User-Agent, and the secret ``headers`` when ``url`` is on a start URL's origin."""
        secret = self._secret_headers if self._policy.sends_credentials(url) else {}
        return {**secret, "User-Agent": self._user_agent}


def _read_robots(response: requests.Response, transfer: Transfer) -> tuple[int, str, str | None]:
    return read_robots_answer(response)
