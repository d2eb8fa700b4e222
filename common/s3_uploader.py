"""Putting files into the destination bucket: checked, idempotent, verified.

Destination keys read: ``bucket``, ``endpoint_url``, ``region``, ``checksum``,
``access_key_id``/``secret_access_key``, ``multipart_threshold_mb``,
``multipart_chunksize_mb``, ``max_concurrency``.

* One boto3 client and one s3transfer ``TransferManager`` per destination, shared by
  every job of the run (clients are thread-safe; the manager bounds the part uploads
  in flight, hence memory, across all jobs).
* Every object carries its SHA-256 as metadata ``sha256``. An object already present
  with the same ``sha256`` and size is not uploaded again (``skipped_same``).
* With ``checksum: sha256`` a single-part PUT sends our streamed SHA-256 as
  ``ChecksumSHA256``, so the store itself rejects a corrupted body; multipart uploads
  send per-part SHA-256 checksums. ``crc32`` sends CRC32s; ``when_required`` sends none
  (for S3-compatible stores that reject boto3's default checksums).
* After each upload the object is checked with a HEAD: size and ``sha256`` must match.

The uploader knows nothing of sources: it takes a local path, a key and a digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.manager import TransferConfig, TransferManager

from common.config_model import DestinationConfig
from common.exceptions import TransientUploadError, UploadError, is_transient
from common.retry import RetryPolicy
from common.secret import reveal

__all__ = ["S3Uploader", "UploadOutcome", "UploaderPool"]

log = structlog.get_logger(__name__)
MiB = 1024 * 1024


@dataclass(frozen=True)
class UploadOutcome:
    key: str
    status: Literal["uploaded", "skipped_same"]
    size: int
    sha256: str


class S3Uploader:
    """Uploads into one destination (bucket set per call, client shared)."""

    def __init__(self, dest: DestinationConfig, timeout_s: float, pool_size: int) -> None:
        when = "when_required" if dest.checksum == "when_required" else "when_supported"
        config = Config(
            region_name=dest.region,
            max_pool_connections=max(pool_size, dest.max_concurrency) + 4,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": 1},  # our RetryPolicy retries, and counts
            request_checksum_calculation=when,
            response_checksum_validation=when,
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=dest.endpoint_url,
            aws_access_key_id=reveal(dest.access_key_id),
            aws_secret_access_key=reveal(dest.secret_access_key),
            config=config,
        )
        self.checksum = dest.checksum
        self.threshold = dest.multipart_threshold_mb * MiB
        self.transfer = TransferManager(
            self.client,
            TransferConfig(
                multipart_threshold=self.threshold,
                multipart_chunksize=dest.multipart_chunksize_mb * MiB,
                max_request_concurrency=dest.max_concurrency,
                max_submission_concurrency=dest.max_concurrency,
                max_in_memory_upload_chunks=dest.max_concurrency,
            ),
        )

    # ----------------------------------------------------------------- files

    def put_file(self, bucket: str, key: str, path: Path, size: int, sha256: str,
                 retry: RetryPolicy, content_type: str | None = None) -> UploadOutcome:
        """Upload ``path`` to ``key`` unless an identical object is there; verify it."""
        current = retry.call(self._head, bucket, key, what=f"head {key}")
        if current is not None and _matches(current, size, sha256):
            log.debug("file_skipped_same", key=key, sha256=sha256)
            return UploadOutcome(key, "skipped_same", size, sha256)
        retry.call(self._upload, bucket, key, path, size, sha256, content_type, what=f"put {key}")
        log.debug("file_uploaded", key=key, bytes=size, sha256=sha256)
        return UploadOutcome(key, "uploaded", size, sha256)

    def _upload(self, bucket: str, key: str, path: Path, size: int, sha256: str, content_type: str | None) -> None:
        extra: dict[str, Any] = {"Metadata": {"sha256": sha256}}
        if content_type:
            extra["ContentType"] = content_type
        if self.checksum == "sha256":
            if size < self.threshold:
                extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
            else:
                extra["ChecksumAlgorithm"] = "SHA256"
        elif self.checksum == "crc32":
            extra["ChecksumAlgorithm"] = "CRC32"
        try:
            self.transfer.upload(str(path), bucket, key, extra_args=extra).result()
            head = self._head(bucket, key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _upload_error(f"upload of {key} failed", exc, key) from exc
        if head is None or not _matches(head, size, sha256):
            raise TransientUploadError(f"verification of {key} failed: size or sha256 differs after upload", key=key)

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _upload_error(f"cannot check {key}", exc, key) from exc
        except BotoCoreError as exc:
            raise _upload_error(f"cannot check {key}", exc, key) from exc

    # ----------------------------------------------------------------- small objects

    def put_json(self, bucket: str, key: str, document: Any, retry: RetryPolicy) -> str:
        """Write a small JSON document (manifest, errors) in one PUT, with its ``sha256``.

        Skipped, like files, when an identical object is already there. Returns the status.
        """
        body = json.dumps(document, indent=2, sort_keys=False, default=str).encode()
        digest = hashlib.sha256(body).hexdigest()
        current = retry.call(self._head, bucket, key, what=f"head {key}")
        if current is not None and _matches(current, len(body), digest):
            return "skipped_same"
        retry.call(self._put_bytes, bucket, key, body, digest, what=f"put {key}")
        return "uploaded"

    def _put_bytes(self, bucket: str, key: str, body: bytes, sha256: str) -> None:
        extra: dict[str, Any] = {}
        if self.checksum == "sha256":
            extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                                   Metadata={"sha256": sha256}, **extra)
        except (ClientError, BotoCoreError) as exc:
            raise _upload_error(f"write of {key} failed", exc, key) from exc

    def close(self) -> None:
        self.transfer.shutdown(cancel=False)


def _matches(head: dict[str, Any], size: int, sha256: str) -> bool:
    return head.get("ContentLength") == size and head.get("Metadata", {}).get("sha256") == sha256


def _upload_error(message: str, exc: BaseException, key: str) -> UploadError:
    detail = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    cls = TransientUploadError if is_transient(exc) else UploadError
    return cls(f"{message}: {detail}", key=key)


class UploaderPool:
    """One S3Uploader per distinct destination client settings, created on first use."""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self._uploaders: dict[tuple[Any, ...], S3Uploader] = {}
        self._lock = threading.Lock()

    def get(self, dest: DestinationConfig, timeout_s: float) -> S3Uploader:
        key = dest.client_key()
        with self._lock:
            uploader = self._uploaders.get(key)
            if uploader is None:
                uploader = self._uploaders[key] = S3Uploader(dest, timeout_s, self.pool_size)
            return uploader

    def close(self) -> None:
        with self._lock:
            for uploader in self._uploaders.values():
                uploader.close()
            self._uploaders.clear()
