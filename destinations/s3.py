"""The ``s3`` destination: objects in a bucket (the default destination).

A thin face over :class:`~common.s3_uploader.S3Uploader`, which does the work (one boto3
client per destination, skip-same from folder listings, verified single PUTs, resumable
multipart uploads, stale-copy deletes of our own objects); see that module for the details.

The pre-flight check (:meth:`S3Destination.check`), once per run before any job:

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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from common.config_model import DestinationConfig
from common.exceptions import is_transient
from common.interfaces.destination import (
    DestinationSetup,
    DestinationUnusable,
    FileDestination,
    LandingFile,
    PutStatus,
)
from common.retry import RetryPolicy
from common.s3_client import s3_store
from common.s3_uploader import S3Uploader
from common.secret import Secret
from common.stream_hooks import StreamHook

__all__ = ["PROBE_KEY", "S3Destination", "s3_settings"]

log = structlog.get_logger(__name__)

#: The key of the write probe: an upload created and aborted there, never an object.
PROBE_KEY = "_manifests/.write-check"

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["bucket"],
    "properties": {
        "bucket": {"type": "string", "minLength": 3, "maxLength": 63, "description": "Destination S3 bucket."},
        "endpoint_url": {"type": ["string", "null"], "default": None,
                         "description": "S3-compatible endpoint; empty or null means the AWS default."},
        "region": {"type": "string", "default": "us-east-1", "description": "Region of the bucket."},
        "checksum": {
            "enum": ["sha256", "crc32", "when_required"], "default": "sha256",
            "description": "Transport checksum sent with uploads; when_required sends none (for stores that "
                           "reject boto3's default checksums). With sha256 over an http:// endpoint the body is not "
                           "hashed a second time for the request signature (the signed checksum header covers it), "
                           "as botocore does over https.",
        },
        "access_key_id": {"type": "string", "x-secret": True,
                          "description": "Static credentials; default: the AWS credential chain."},
        "secret_access_key": {"type": "string", "x-secret": True,
                              "description": "Static credentials; default: the AWS credential chain."},
        "multipart_threshold_mb": {"type": "integer", "minimum": 5, "default": 64,
                                   "description": "Files at least this large are uploaded in parts."},
        "multipart_chunksize_mb": {"type": "integer", "minimum": 5, "default": 8, "description": "Size of one part."},
        "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8,
                            "description": "Parallel part uploads, shared by all jobs of the run."},
        "verify_tls": {"type": "boolean", "default": True,
                       "description": "Verify the S3 endpoint's TLS certificate; false logs a warning."},
        "crt": {
            "type": "boolean", "default": True,
            "description": "Files up to 1 MiB are PUT through the AWS Common Runtime's S3 client (awscrt: C "
                           "threads, no Python per request) instead of botocore; retries, verification and "
                           "errors stay the same. false: botocore sends every request. Never used when a proxy "
                           "is set in the environment (HTTPS_PROXY...), which the runtime does not read.",
        },
        "server_side_copy": {
            "type": "boolean", "default": False,
            "description": "Files read by an s3 source from this same endpoint are copied by the store (CopyObject, "
                           "conditional on the version read) rather than uploaded from the local copy: no upload "
                           "bandwidth. The copy is checked against the sha256 streamed at download (the local copy "
                           "is the one validated); a refused or different copy is uploaded instead. The destination's "
                           "credentials must be allowed to read the source bucket (like rclone's "
                           "--server-side-across-configs).",
        },
    },
}

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


def s3_settings(config: Mapping[str, Any]) -> DestinationConfig:
    """The typed settings of an ``s3`` destination's (resolved) registry keys."""
    return DestinationConfig(
        bucket=config["bucket"],
        endpoint_url=config.get("endpoint_url") or None,
        region=config["region"],
        checksum=config["checksum"],
        access_key_id=_secret(config.get("access_key_id")),
        secret_access_key=_secret(config.get("secret_access_key")),
        multipart_threshold_mb=config["multipart_threshold_mb"],
        multipart_chunksize_mb=config["multipart_chunksize_mb"],
        max_concurrency=config["max_concurrency"],
        verify_tls=config["verify_tls"],
        crt=config["crt"],
    )


class S3Destination(FileDestination):
    config_schema = _SCHEMA
    default_name = "s3"

    def __init__(self, config: Mapping[str, Any], setup: DestinationSetup) -> None:
        super().__init__(config, setup)
        self.settings = s3_settings(config)
        self.bucket = self.settings.bucket
        self.uploader = S3Uploader(self.settings, setup.timeout_s, setup.workers, setup.state_dir)
        self.store = s3_store(self.settings.endpoint_url) if config.get("server_side_copy") else None
        """With ``server_side_copy``: a file read from this store (``LandingFile.stored_at``) is copied there."""

    @classmethod
    def share_key(cls, config: Mapping[str, Any]) -> Hashable:
        settings = s3_settings(config)
        return (cls, settings.client_key(), settings.bucket, bool(config.get("server_side_copy")))

    def describe(self) -> str:
        return f"bucket '{self.bucket}' at {_endpoint(self.settings.endpoint_url)}"

    def stream_hooks(self) -> dict[str, StreamHook]:
        return self.uploader.stream_hooks()

    def put_file(self, key: str, file: LandingFile, retry: RetryPolicy, *, skip_same: bool = True,
                 commit: Callable[[], bool] | None = None) -> PutStatus:
        """``commit``: see :meth:`put_file_ahead` (the uploader asks it before anything becomes visible)."""
        same_store = self.store is not None and file.stored_at is not None and file.stored_at.store == self.store
        return self.uploader.put_file(self.bucket, key, file.path, file.size, file.sha256, retry,
                                      content_type=file.content_type, streamed=file.streamed, skip_same=skip_same,
                                      copy_from=file.stored_at if same_store else None, commit=commit).status

    def lands_ahead_from(self) -> int | None:
        """Files of ``multipart_threshold_mb`` and more: their parts go while the file is validated,
        and the upload is completed only if it is valid (else aborted: nothing lands)."""
        return self.uploader.threshold

    def put_file_ahead(self, key: str, file: LandingFile, retry: RetryPolicy, commit: Callable[[], bool]) -> PutStatus:
        return self.put_file(key, file, retry, commit=commit)

    def put_json(self, key: str, document: Any, retry: RetryPolicy) -> PutStatus:
        return self.uploader.put_json(self.bucket, key, document, retry)  # type: ignore[return-value]

    def delete_owned(self, key: str, retry: RetryPolicy) -> bool:
        return self.uploader.delete_owned(self.bucket, key, retry)

    def read_json(self, key: str, retry: RetryPolicy) -> Any | None:
        """The document at ``key``; None when there is none or it cannot be read or parsed (an
        earlier manifest that cannot be read counts as none: the job then fetches everything)."""
        try:
            body = self.uploader.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return json.loads(body)
        except Exception:  # noqa: BLE001 - no usable document means a full run, never a failed one
            return None

    def check(self, retry: RetryPolicy) -> None:
        client, bucket = self.uploader.client, self.bucket
        try:
            retry.call(client.head_bucket, Bucket=bucket, what=f"head bucket {bucket}")
            tries = [0]

            def create() -> dict[str, Any]:
                tries[0] += 1
                answer: dict[str, Any] = client.create_multipart_upload(Bucket=bucket, Key=PROBE_KEY)
                return answer

            upload = retry.call(create, what=f"write check {bucket}")
        except NoCredentialsError:
            raise DestinationUnusable("no credentials found: set the destination's access_key_id and "
                                      "secret_access_key, or AWS credentials in the environment") from None
        except PartialCredentialsError as exc:
            raise DestinationUnusable(f"incomplete credentials ({type(exc).__name__})") from None
        except (ClientError, BotoCoreError, OSError) as exc:
            raise DestinationUnusable(_reason(exc, retry)) from None
        _clean_up(client, bucket, upload["UploadId"], tries[0] > 1, retry)

    def close(self) -> None:
        self.uploader.close()


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


def _secret(value: Any) -> Secret | None:
    return value if isinstance(value, Secret) or value is None else Secret(str(value))
