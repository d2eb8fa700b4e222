"""Webhook notifications when a run ends: the registry's ``notify`` section.

Registry keys (``notify``): ``webhooks`` (a list of ``{url, on}``; ``on`` is ``failure``, the
default, or ``always``), ``retry`` (``attempts``, ``backoff_s``, ``max_backoff_s``) and
``timeout_s`` (one POST). ``failure`` means the run's exit code is not 0 (a job that did not
succeed, rejected files unless ``--rejected-ok``, an interrupted run).

Each webhook gets one POST of :func:`summary_payload` as JSON: the run, its exit code and
totals, the jobs that did not succeed with their (redacted) errors, and a ``text`` field that
Slack's incoming webhooks (and Mattermost, Teams' Slack-compatible ones, ...) show as the
message. No configuration value is in it. Transient failures (refused connections, timeouts,
HTTP 408/429/5xx) are retried by the notify section's retry policy; a webhook that still
fails is one ``notify_failed`` warning and never changes the run's exit code. Webhook URLs
often hold a token (Slack's do): they are Secrets, and logs show only their scheme and host.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from common.config_model import NotifyConfig, Webhook
from common.exceptions import RETRY_HTTP_CODES, ModuleSystemError, Transient
from common.retry import RetryPolicy
from common.secret import redact
from orchestrator.run_result import RunResult

if TYPE_CHECKING:
    import requests

__all__ = ["Notified", "NotifyError", "notify_run", "shown_url", "summary_payload"]

log = structlog.get_logger(__name__)
#: Jobs listed by name in a payload; the rest are counted.
MAX_JOBS_LISTED = 20


class NotifyError(ModuleSystemError):
    """A webhook refused the summary or could not be reached (the message holds no URL)."""


class TransientNotifyError(NotifyError, Transient):
    """A failure worth retrying: connection refused or reset, a timeout, HTTP 408/429/5xx."""


@dataclass(frozen=True)
class Notified:
    """What became of one webhook."""

    webhook: str
    """Its scheme and host (:func:`shown_url`), never the full URL."""
    sent: bool
    error: str | None = None


def shown_url(url: str) -> str:
    """``scheme://host[:port]/...``: enough to tell webhooks apart, without a path or query
    that may hold a token, nor user info."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..."


def summary_payload(result: RunResult, registry: str | None = None) -> dict[str, Any]:
    """The JSON a webhook receives (see the module docstring)."""
    totals = result.totals
    not_ok = result.failed_jobs
    state = "succeeded" if result.ok else ("interrupted" if result.exit_code == 130 else "failed")
    listed = [{"job_id": j.job_id, "service_id": j.service_id, "status": j.status,
               "error": redact(j.error) if j.error else None} for j in not_ok[:MAX_JOBS_LISTED]]
    text = (f"module_system run {result.run_id} {state} (exit code {int(result.exit_code)}): "
            f"{len(result.jobs)} job(s): {totals.jobs.succeeded} succeeded, {totals.jobs.failed} failed, "
            f"{totals.jobs.timed_out} timed out, {totals.jobs.cancelled} cancelled; files: {totals.files.landed} "
            f"landed, {totals.files.rejected} rejected, {totals.files.failed} failed")
    if listed:
        text += "\n" + "\n".join(f"- {j['job_id']} ({j['service_id']}): {j['status']}"
                                 + (f": {j['error']}" if j["error"] else "") for j in listed)
        if len(not_ok) > MAX_JOBS_LISTED:
            text += f"\n- ... and {len(not_ok) - MAX_JOBS_LISTED} more"
    return {
        "text": text,
        "event": "run_summary",
        "run_id": result.run_id,
        "status": state,
        "exit_code": int(result.exit_code),
        "started_at": result.to_dict()["started_at"],
        "finished_at": result.to_dict()["finished_at"],
        "batch_file": result.batch_file,
        "registry": registry,
        "host": socket.gethostname(),
        "totals": totals.to_dict(),
        "jobs_not_succeeded": listed,
        "jobs_not_listed": max(0, len(not_ok) - MAX_JOBS_LISTED),
    }


def notify_run(config: NotifyConfig, result: RunResult, registry: str | None = None,
               session: requests.Session | None = None) -> list[Notified]:
    """POST the run summary to each webhook whose ``on`` matches; never raises for a webhook."""
    policy = RetryPolicy(attempts=config.retry.attempts, backoff_s=config.retry.backoff_s,
                         max_backoff_s=config.retry.max_backoff_s)
    payload = summary_payload(result, registry)
    outcomes = []
    import requests  # here: a run without webhooks does not import it

    with session or requests.Session() as http:
        for hook in config.webhooks:
            if hook.on == "failure" and result.ok:
                continue
            outcomes.append(_notify_one(http, hook, payload, policy, config.timeout_s))
    return outcomes


def _notify_one(http: requests.Session, hook: Webhook, payload: dict[str, Any], policy: RetryPolicy,
                timeout_s: float) -> Notified:
    shown = shown_url(hook.url.reveal())
    try:
        status = policy.call(_post, http, hook.url.reveal(), payload, timeout_s, what=f"notify {shown}")
    except NotifyError as exc:
        log.warning("notify_failed", webhook=shown, error=str(exc), attempts=policy.attempts)
        return Notified(shown, False, str(exc))
    log.info("notify_sent", webhook=shown, status=status)
    return Notified(shown, True)


def _post(http: requests.Session, url: str, payload: dict[str, Any], timeout_s: float) -> int:
    """One POST; errors translated to NotifyError / TransientNotifyError with messages that
    hold no part of the URL (requests' own messages quote it)."""
    import requests

    try:
        response = http.post(url, json=payload, timeout=timeout_s, allow_redirects=False)
    except requests.Timeout:
        raise TransientNotifyError(f"no answer within {timeout_s:g} s") from None
    except requests.ConnectionError:
        raise TransientNotifyError("cannot connect (refused, reset or unreachable)") from None
    except requests.RequestException as exc:
        raise NotifyError(f"request failed: {type(exc).__name__}") from None
    with response:
        if response.status_code in RETRY_HTTP_CODES:
            retry_after = response.headers.get("Retry-After", "")
            fields = {"retry_after": float(retry_after)} if retry_after.isdigit() else {}
            raise TransientNotifyError(f"HTTP {response.status_code}", **fields)
        if not 200 <= response.status_code < 300:
            raise NotifyError(f"HTTP {response.status_code}")
        return response.status_code
