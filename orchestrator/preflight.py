"""Before any job starts: can the run write to each of its destinations?

Every distinct destination of the batch's jobs (bucket + client settings: endpoint,
region, credentials, ...) is checked once, in batch order, before the first job starts:

1. ``HeadBucket``: the endpoint answers, the credentials are accepted, the bucket exists
   and may be listed (the uploader lists folders and HEADs keys to skip files already
   there; without ``s3:ListBucket`` a HEAD of a missing key is refused, so every new
   file would fail anyway).
2. A write probe that leaves nothing behind: ``CreateMultipartUpload`` of the key
   ``_manifests/.write-check`` (where the run's manifests go), then
   ``AbortMultipartUpload``. Creating an upload needs the same ``s3:PutObject``
   permission (and KMS key use, with SSE-KMS) as a real upload, yet no object is
   written, so no version, no event notification and no lifecycle cost; a
   zero-byte PUT would show up to every consumer listening on the bucket. Were the
   create's answer lost and retried, the uploads at that key (ours alone: nothing else
   writes under ``_manifests/``) are listed and aborted.

Transient failures (refused or reset connections, timeouts, 5xx, throttling) are
retried by the policy of the first service using the destination. A destination that
still cannot be written raises :class:`DestinationUnusable`, a ConfigError: the CLI
prints one line naming the registry, the service(s), the bucket, the endpoint and the
reason, never a credential, and exits 2; no job runs, no job log is written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from common.config_model import Batch, DestinationConfig, Registry, ServiceConfig
from common.exceptions import ConfigError, is_transient
from common.retry import RetryPolicy
from common.s3_uploader import destination_client

__all__ = ["PROBE_KEY", "DestinationUnusable", "check_destinations"]

log = structlog.get_logger(__name__)

#: The key of the write probe: an upload created and aborted there, never an object.
PROBE_KEY = "_manifests/.write-check"

#: S3 error codes, as a reason a user can act on.
_REASONS = {
    "NoSuchBucket": "the bucket does not exist",
    "404": "the bucket does not exist",
    "InvalidAccessKeyId": "the access key id is not known to the store",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access to the bucket is disabled",
    "403": "access denied (HTTP 403: wrong credentials, or no s3:ListBucket permission on the bucket)",
    "301": "the bucket is in another region than the destination's 'region' (HTTP 301)",
    "PermanentRedirect": "the bucket is in another region than the destination's 'region'",
    "AuthorizationHeaderMalformed": "the bucket is in another region than the destination's 'region'",
    "400": "the store refused the request (HTTP 400: often a wrong region or endpoint)",
}


class DestinationUnusable(ConfigError):
    """A destination cannot be written; the run does not start. Fields: ``bucket``, ``services``."""


@dataclass
class _Destination:
    config: DestinationConfig
    service: ServiceConfig
    """The first service (in batch order) that writes here: its timeout and retry policy are used."""
    service_ids: list[str] = field(default_factory=list)


def check_destinations(registry: Registry, batch: Batch, stop: threading.Event | None = None) -> None:
    """Check every destination of ``batch`` once; raise DestinationUnusable for the first that fails."""
    destinations: dict[tuple[Any, ...], _Destination] = {}
    for job in batch.jobs:
        service = registry.services[job.service_id]
        dest = service.destination
        entry = destinations.setdefault((dest.client_key(), dest.bucket), _Destination(dest, service))
        if service.service_id not in entry.service_ids:
            entry.service_ids.append(service.service_id)
    for entry in destinations.values():
        reason = _problem(entry, stop)
        if reason is not None:
            services = ", ".join(f"'{s}'" for s in entry.service_ids)
            where = _endpoint(entry.config.endpoint_url)
            log.info("run_not_started", bucket=entry.config.bucket, services=entry.service_ids, reason=reason)
            raise DestinationUnusable(
                f"{registry.path}: service{'s' if len(entry.service_ids) > 1 else ''} {services}: destination "
                f"bucket '{entry.config.bucket}' at {where} cannot be written: {reason}",
                bucket=entry.config.bucket, services=tuple(entry.service_ids))
    log.info("destinations_checked", destinations=len(destinations))


def _problem(entry: _Destination, stop: threading.Event | None) -> str | None:
    """None when ``entry`` can be written, else the reason (one line, no secret)."""
    cfg, service = entry.config, entry.service
    retry = RetryPolicy(attempts=service.retry.attempts, backoff_s=service.retry.backoff_s,
                        max_backoff_s=service.retry.max_backoff_s, stop=stop)
    bucket = cfg.bucket
    try:
        client = destination_client(cfg, service.timeout_s, pool_size=1)
        retry.call(client.head_bucket, Bucket=bucket, what=f"head bucket {bucket}")
        tries = [0]

        def create() -> dict[str, Any]:
            tries[0] += 1
            answer: dict[str, Any] = client.create_multipart_upload(Bucket=bucket, Key=PROBE_KEY)
            return answer

        upload = retry.call(create, what=f"write check {bucket}")
    except NoCredentialsError:
        return ("no credentials found: set the destination's access_key_id and secret_access_key, "
                "or AWS credentials in the environment")
    except PartialCredentialsError as exc:
        return f"incomplete credentials ({type(exc).__name__})"
    except (ClientError, BotoCoreError, OSError) as exc:
        return _reason(exc, retry)
    _clean_up(client, bucket, upload["UploadId"], tries[0] > 1, retry)
    return None


def _reason(exc: BaseException, retry: RetryPolicy) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        text = _REASONS.get(code, "the store refused it")
        if is_transient(exc):
            text = f"the store kept failing after {retry.attempts} tries"
        return text if code in text else f"{text} ({code})"
    if is_transient(exc):
        return f"cannot reach the endpoint after {retry.attempts} tries ({type(exc).__name__})"
    return type(exc).__name__


def _clean_up(client: Any, bucket: str, upload_id: str, retried: bool, retry: RetryPolicy) -> None:
    """Abort the probe's upload; after a retried create, any other upload at the probe key too
    (another run's probe aborted meanwhile is gone already: ``NoSuchUpload`` is fine)."""
    try:
        ids = {upload_id}
        if retried:
            listed = retry.call(client.list_multipart_uploads, Bucket=bucket, Prefix=PROBE_KEY,
                                what=f"list write checks {bucket}")
            ids.update(u["UploadId"] for u in listed.get("Uploads", []) if u["Key"] == PROBE_KEY)
        for upload in sorted(ids):
            try:
                retry.call(client.abort_multipart_upload, Bucket=bucket, Key=PROBE_KEY, UploadId=upload,
                           what=f"abort write check {bucket}")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
    except (ClientError, BotoCoreError, OSError) as exc:  # writable all the same; the bucket's lifecycle rule ends it
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
        log.warning("write_check_not_aborted", bucket=bucket, key=PROBE_KEY, error=code)


def _endpoint(url: str | None) -> str:
    """The endpoint as scheme://host[:port], never a user, password, path or query."""
    if not url:
        return "AWS"
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"
