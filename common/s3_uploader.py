"""Putting files into the destination bucket: checked, idempotent, verified.

Destination keys read: ``bucket``, ``endpoint_url``, ``region``, ``checksum``,
``access_key_id``/``secret_access_key``, ``verify_tls``, ``multipart_threshold_mb``,
``multipart_chunksize_mb``, ``max_concurrency``.

* One boto3 client per destination, shared by every job of the run (clients are
  thread-safe), its connection pool sized to the workers. Files below
  ``multipart_threshold_mb`` go in one PUT, streamed from disk by the job's own thread;
  larger ones through our resumable :class:`~common.multipart_upload.MultipartUploader`,
  whose part pool and memory budget (``max_concurrency`` parts) are shared by all jobs.
  Its state lives in ``state_dir`` (the runner passes ``<state-dir>/uploads``), so an
  upload cut off by a crash or a kill resumes from its finished parts on the next run.
* On the first file put into a bucket, our multipart uploads abandoned for more than a
  day (their state file says so) are aborted; uploads we hold no state of are never
  touched (see :meth:`~common.multipart_upload.MultipartUploader.sweep`).
* Every object carries its SHA-256 as metadata ``sha256``. An object already present
  with the same content is not uploaded again (``skipped_same``). What is present comes
  from one listing per folder (:class:`~common.key_index.KeyIndex`): same size and an
  ETag equal to the content's MD5 is the same content; a HEAD (``sha256`` metadata) only
  where the listing cannot tell (multipart ETags, folders that cannot be listed).
* With ``checksum: sha256`` a single-part PUT sends our streamed SHA-256 as
  ``ChecksumSHA256``, so the store itself rejects a corrupted body; multipart uploads
  send per-part SHA-256 checksums. ``crc32`` sends CRC32s; ``when_required`` sends none
  (for S3-compatible stores that reject boto3's default checksums).
* Each upload is verified: a single PUT by its answer (the ``ChecksumSHA256`` the store
  echoes, or else an ETag equal to the MD5 we streamed), so one request per new file;
  a multipart upload, or a PUT whose answer proves neither (SSE-KMS ETags), by a HEAD:
  size and ``sha256`` must match.

The uploader knows nothing of sources: it takes a local path, a key and a digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from common.config_model import DestinationConfig
from common.exceptions import TransientUploadError, UploadWithdrawn
from common.key_index import ABSENT, Existing, KeyIndex
from common.multipart_state import StateStore, part_size_for
from common.multipart_upload import MultipartUploader, upload_error
from common.retry import RetryPolicy
from common.s3_client import new_s3_client
from common.s3_crt import CRT_MAX_BODY, CrtS3, crt_s3
from common.secret import reveal
from common.stream_hooks import Md5Hook, PartSha256Hook, StreamHook

if TYPE_CHECKING:
    from common.interfaces.base_module import StoredAt

__all__ = ["S3Uploader", "UploadOutcome", "UploaderPool", "destination_client"]

log = structlog.get_logger(__name__)
MiB = 1024 * 1024
#: Files up to this size are read into memory for their PUT; larger ones are streamed.
SMALL_BODY = MiB


@dataclass(frozen=True)
class UploadOutcome:
    key: str
    status: Literal["uploaded", "skipped_same"]
    size: int
    sha256: str


class S3Uploader:
    """Uploads into one destination (bucket set per call, client shared).

    ``state_dir`` keeps the state of multipart uploads in progress so that a later
    uploader (the next run) resumes them; None keeps it in memory only.
    """

    def __init__(self, dest: DestinationConfig, timeout_s: float, pool_size: int,
                 state_dir: Path | None = None) -> None:
        if not dest.verify_tls:
            log.warning("tls_verification_disabled", endpoint_url=dest.endpoint_url)
        self.client = destination_client(dest, timeout_s, pool_size)
        self.checksum = dest.checksum
        self.threshold = dest.multipart_threshold_mb * MiB
        self.index = KeyIndex(self.client)
        self.multipart = MultipartUploader(self.client, StateStore(state_dir), dest.checksum,
                                           dest.multipart_chunksize_mb * MiB, dest.max_concurrency)
        self._swept: set[str] = set()
        self._sweep_lock = threading.Lock()
        self._no_copy: set[str] = set()
        """Source buckets a server-side copy was refused from (not tried again in this run)."""
        self._crt: CrtS3 | None = None
        """Small PUTs through the AWS Common Runtime (:mod:`common.s3_crt`); None: botocore sends them."""
        if dest.crt:
            self._crt = crt_s3(self.client, region=dest.region, checksum=dest.checksum, timeout_s=timeout_s,
                               connections=max(pool_size, dest.max_concurrency) + 4, verify_tls=dest.verify_tls,
                               access_key_id=reveal(dest.access_key_id),
                               secret_access_key=reveal(dest.secret_access_key))

    # ----------------------------------------------------------------- files

    def stream_hooks(self) -> dict[str, StreamHook]:
        """The digests this destination wants streamed with each file (``streamed`` of
        :meth:`put_file`): the MD5 of small files; with SHA-256 checksums, the parts' SHA-256."""
        hooks: dict[str, StreamHook] = {"md5": Md5Hook()}
        if self.multipart.checksum == "sha256":
            hooks["part_sha256"] = PartSha256Hook(self.multipart.chunksize, self.threshold)
        return hooks

    def put_file(self, bucket: str, key: str, path: Path, size: int, sha256: str, retry: RetryPolicy,
                 content_type: str | None = None, stop: threading.Event | None = None,
                 streamed: Mapping[str, Any] | None = None, skip_same: bool = True,
                 copy_from: StoredAt | None = None, commit: Callable[[], bool] | None = None) -> UploadOutcome:
        """Upload ``path`` to ``key`` unless an identical object is there (``skip_same``: a
        manifest, which holds its run id, is written without looking); verify it.

        ``streamed``: what :meth:`stream_hooks` computed while the file was written. Its ``md5``
        (hex; computed here when absent and the file goes in one PUT) is what a single-part
        object's ETag is compared with; its ``part_sha256`` (``(part_size, hex digests)``)
        spares a multipart upload its own hashing pass when ``part_size`` is the one it uses. ``stop`` (default
        ``retry.stop``, the run's stop event) ends a multipart upload after its parts in
        flight: then :class:`~common.multipart_upload.UploadStopped` is raised. ``copy_from``: the
        same content on this store (the version the source read): a file below the multipart
        threshold is copied from there server-side (:meth:`_copied`) and uploaded only when the
        store refuses the copy or the copy is not these bytes. ``commit``: asked once the bytes
        are sent (a multipart upload's parts) or, for a single PUT, before it; False withdraws
        the upload (:class:`~common.exceptions.UploadWithdrawn`: nothing lands). It is not
        asked when nothing is to be written (an identical object is there: ``skipped_same``).
        """
        self._sweep(bucket, retry)
        streamed = streamed or {}
        md5: str | None = streamed.get("md5")
        part_size, part_sha256 = streamed.get("part_sha256") or (None, None)
        single = size < self.threshold
        if single and md5 is None:
            md5 = _file_md5(path)
        if skip_same and self._is_same(bucket, key, size, sha256, md5, retry):
            log.debug("file_skipped_same", key=key, sha256=sha256)
            return UploadOutcome(key, "skipped_same", size, sha256)
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        try:
            if single:
                assert md5 is not None
                if commit is not None and not commit():
                    raise UploadWithdrawn.of(key)
                copied = self._copied(bucket, key, copy_from, sha256, md5, retry, extra) if copy_from else None
                answer = copied if copied is not None else self._put_once(
                    bucket, key, size, sha256, retry, lambda: self._put_small(bucket, key, path, size, sha256, extra), md5)
                verified = _echoes(answer, sha256, md5)
            else:
                usable = part_size is not None and part_size == part_size_for(size, self.multipart.chunksize)
                landed = self.multipart.upload(bucket, key, path, size, sha256, retry,
                                               stop if stop is not None else retry.stop, extra,
                                               part_sha256=part_sha256 if usable else None, commit=commit)
                if landed is not None:  # another run sharing the state dir put this very file there
                    self.index.record(bucket, key, size, str(landed.get("ETag", "")))
                    return UploadOutcome(key, "skipped_same", size, sha256)
                verified = False
        except UploadWithdrawn:  # nothing was written
            raise
        except BaseException as exc:  # what the key holds now is not known
            self.index.forget(bucket, key)
            if isinstance(exc, (ClientError, BotoCoreError, OSError)):
                raise upload_error(f"upload of {key} failed", exc, key) from exc
            raise
        if not verified:  # multipart, or a store whose ETag is not the MD5 (SSE-KMS): ask
            head = retry.call(self._head, bucket, key, what=f"head {key}")
            if head is None or not _matches(head, size, sha256, md5):
                self.index.forget(bucket, key)
                raise TransientUploadError(f"verification of {key} failed: size or sha256 differs after upload",
                                           key=key)
            answer = head
        self.index.record(bucket, key, size, str(answer.get("ETag", "")))
        log.debug("file_uploaded", key=key, bytes=size, sha256=sha256)
        return UploadOutcome(key, "uploaded", size, sha256)

    def _is_same(self, bucket: str, key: str, size: int, sha256: str, md5: str | None, retry: RetryPolicy) -> bool:
        """Is an object with this content at ``key``? From the folder's listing; a HEAD only
        when the listing cannot tell (not listed, or same size with an ETag that is no MD5)."""
        known = self.index.lookup(bucket, key, retry)
        if known is ABSENT:
            return False
        if isinstance(known, Existing):
            if known.size != size:
                return False
            if md5 is not None and known.etag == md5:
                return True
        head = retry.call(self._head, bucket, key, what=f"head {key}")
        return head is not None and _matches(head, size, sha256, md5)

    def _put_once(self, bucket: str, key: str, size: int, sha256: str, retry: RetryPolicy,
                  put: Callable[[], dict[str, Any]], md5: str | None = None) -> dict[str, Any]:
        """``put()`` under ``retry``; before a retry, a HEAD: if the failed try landed after
        all (its answer lost), it is not sent again, so no key is written twice. Returns the
        PUT's answer (or that HEAD's)."""
        tries = 0

        def attempt() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            if tries > 1 and (head := self._head(bucket, key)) is not None and _matches(head, size, sha256, md5):
                log.debug("put_landed_before_retry", key=key)
                return head
            return put()

        return retry.call(attempt, what=f"put {key}")

    def _copied(self, bucket: str, key: str, source: StoredAt, sha256: str, md5: str, retry: RetryPolicy,
                extra: dict[str, Any]) -> dict[str, Any] | None:
        """A server-side copy of ``source`` to ``key`` (S3 ``CopyObject``: no byte goes through
        this process), conditional on the version read (``CopySourceIfMatch``), with our metadata
        and a checksum the store computes; its answer when the copy is provably these bytes
        (:func:`_echoes`), else None: the caller then uploads the local file, which is the one
        validated (over a copy that differs). A source bucket these credentials cannot copy from,
        or a store without server-side copies, is not asked again."""
        if source.bucket in self._no_copy:
            return None
        args: dict[str, Any] = {"Metadata": {"sha256": sha256}, "MetadataDirective": "REPLACE", **extra}
        if self.checksum in ("sha256", "crc32"):
            args["ChecksumAlgorithm"] = self.checksum.upper()
        try:
            answer = retry.call(self.client.copy_object, Bucket=bucket, Key=key,
                                CopySource={"Bucket": source.bucket, "Key": source.key},
                                CopySourceIfMatch=f'"{source.etag}"', what=f"copy {key}", **args)
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
            if code not in ("PreconditionFailed", "412"):  # 412: the source changed since it was read
                self._no_copy.add(source.bucket)
            log.info("server_copy_refused", key=key, source=f"s3://{source.bucket}/{source.key}", code=code,
                     effect="the file is uploaded")
            return None
        result: dict[str, Any] = answer.get("CopyObjectResult") or {}
        if not _echoes(result, sha256, md5):
            log.warning("server_copy_differs", key=key, source=f"s3://{source.bucket}/{source.key}",
                        effect="the fetched file is uploaded over it")
            return None
        return result

    def _put_small(self, bucket: str, key: str, path: Path, size: int, sha256: str,
                   extra: dict[str, Any]) -> dict[str, Any]:
        """One PUT of a file below the multipart threshold, streamed from disk; through the
        Common Runtime when it serves this destination and the file is small."""
        args: dict[str, Any] = {"Metadata": {"sha256": sha256}, **extra}
        if self.checksum == "sha256":
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        elif self.checksum == "crc32":
            args["ChecksumAlgorithm"] = "CRC32"  # the runtime computes it itself (its checksum config)
        if self._crt is not None and size <= CRT_MAX_BODY and set(extra) <= {"ContentType"}:
            headers = {"x-amz-meta-sha256": sha256}
            if "ContentType" in extra:
                headers["Content-Type"] = extra["ContentType"]
            if "ChecksumSHA256" in args:
                headers["x-amz-checksum-sha256"] = args["ChecksumSHA256"]
            return self._crt.put(bucket, key, path, size, sha256, headers)
        with open(path, "rb") as fh:
            # A small file goes as bytes: botocore sends a file-like body only after an
            # ``Expect: 100-continue`` round trip. Memory: at most SMALL_BODY per worker.
            body = fh.read() if os.fstat(fh.fileno()).st_size <= SMALL_BODY else fh
            answer: dict[str, Any] = self.client.put_object(Bucket=bucket, Key=key, Body=body, **args)
        return answer

    def _sweep(self, bucket: str, retry: RetryPolicy) -> None:
        """Once per bucket: abort our multipart uploads abandoned for more than a day."""
        with self._sweep_lock:
            if bucket in self._swept:
                return
            self._swept.add(bucket)
            try:
                aborted = self.multipart.sweep(bucket, retry)
            except (ClientError, BotoCoreError, OSError) as exc:  # OSError: a lock file of the state dir
                log.warning("multipart_sweep_failed", bucket=bucket, error=str(upload_error("sweep", exc, "")))
            else:
                if aborted:
                    log.info("multipart_swept", bucket=bucket, aborted=aborted)

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=bucket, Key=key)
            return head
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise upload_error(f"cannot check {key}", exc, key) from exc
        except BotoCoreError as exc:
            raise upload_error(f"cannot check {key}", exc, key) from exc

    def delete_owned(self, bucket: str, key: str, retry: RetryPolicy) -> bool:
        """Delete the object at ``key`` if it is one of ours (it carries ``sha256`` metadata).

        For stale copies (docs/KEYS.md). Returns whether an object was deleted; an object
        without our metadata is left alone (someone else's). The folder listing answers
        most keys without a request; a HEAD only when it holds or may hold the key.
        """
        if self.index.lookup(bucket, key, retry) is ABSENT:
            return False
        head = retry.call(self._head, bucket, key, what=f"head {key}")
        if head is None:
            return False
        if "sha256" not in head.get("Metadata", {}):
            log.warning("stale_copy_not_ours", key=key)
            return False

        def delete() -> None:
            try:
                self.client.delete_object(Bucket=bucket, Key=key)
            except (ClientError, BotoCoreError) as exc:
                raise upload_error(f"delete of {key} failed", exc, key) from exc

        retry.call(delete, what=f"delete {key}")
        self.index.discard(bucket, key)
        return True

    # ----------------------------------------------------------------- small objects

    def put_json(self, bucket: str, key: str, document: Any, retry: RetryPolicy) -> str:
        """Write a small JSON document (an errors file) in one PUT, with its ``sha256``; skipped,
        like files, when an identical object is already there. Returns the status. Compact JSON
        (the C encoder; an indented document goes through the pure-Python one): ``jq .`` shows
        it indented. (Manifests grow with their files: they are streamed to a file and go
        through :meth:`put_file`.)
        """
        body = json.dumps(document, separators=(",", ":"), default=str).encode()
        digest = hashlib.sha256(body).hexdigest()
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if self._is_same(bucket, key, len(body), digest, md5, retry):
            return "skipped_same"
        answer = self._put_once(bucket, key, len(body), digest, retry,
                                lambda: self._put_bytes(bucket, key, body, digest), md5)
        self.index.record(bucket, key, len(body), str(answer.get("ETag", "")))
        return "uploaded"

    def _put_bytes(self, bucket: str, key: str, body: bytes, sha256: str) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.checksum == "sha256":
            extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        try:
            answer: dict[str, Any] = self.client.put_object(Bucket=bucket, Key=key, Body=body,
                                                            ContentType="application/json",
                                                            Metadata={"sha256": sha256}, **extra)
            return answer
        except (ClientError, BotoCoreError) as exc:
            raise upload_error(f"write of {key} failed", exc, key) from exc

    def close(self) -> None:
        self.multipart.close()
        if self._crt is not None:
            self._crt.close()


def destination_client(dest: DestinationConfig, timeout_s: float, pool_size: int) -> Any:
    """The boto3 client of a destination: its timeouts, checksums and pool; botocore's retries off."""
    when = "when_required" if dest.checksum == "when_required" else "when_supported"
    config = Config(
        region_name=dest.region,
        max_pool_connections=max(pool_size, dest.max_concurrency) + 4,
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"total_max_attempts": 1},  # our RetryPolicy retries, and counts
        parameter_validation=False,  # our own code builds every request: ~10% of a small PUT's CPU
        request_checksum_calculation=when,
        response_checksum_validation=when,
        s3=_s3_options(dest),
    )
    return new_s3_client(
        config,
        verify=dest.verify_tls,
        endpoint_url=dest.endpoint_url,
        aws_access_key_id=reveal(dest.access_key_id),
        aws_secret_access_key=reveal(dest.secret_access_key),
    )


def _s3_options(dest: DestinationConfig) -> dict[str, Any] | None:
    """Body signing off where the body's SHA-256 is sent anyway: ``checksum: sha256`` over http.

    Over plain http botocore hashes every body once more for the signature (SigV4's
    ``X-Amz-Content-SHA256``), even when the request carries our ``ChecksumSHA256``,
    a signed header that the store checks the body against: one more pass over every
    byte (for a 1 GB file, ~0.6 s of CPU). Over https with a checksum botocore already
    sends ``UNSIGNED-PAYLOAD`` for these uploads; this makes http do the same, and only
    with ``sha256`` (a CRC32 could be forged to match altered bytes, so ``crc32`` and
    ``when_required`` keep the signed body).
    """
    endpoint = (dest.endpoint_url or "").lower()
    if dest.checksum == "sha256" and endpoint.startswith("http://"):
        return {"payload_signing_enabled": False}
    return None


def _matches(head: dict[str, Any], size: int, sha256: str, md5: str | None = None) -> bool:
    """Does a HEAD describe an object with this content? By our ``sha256`` metadata, or
    (an object someone else wrote) by an ETag equal to the content's MD5."""
    if head.get("ContentLength") != size:
        return False
    if head.get("Metadata", {}).get("sha256") == sha256:
        return True
    return md5 is not None and str(head.get("ETag", "")).strip('"') == md5


def _echoes(answer: dict[str, Any], sha256: str, md5: str) -> bool:
    """Does a PUT's answer prove the store holds our bytes? Its ``ChecksumSHA256`` (stores
    that echo it) or its ETag, the body's MD5 for a single-part upload without SSE-KMS."""
    echoed = answer.get("ChecksumSHA256")
    if echoed:
        return bool(echoed == base64.b64encode(bytes.fromhex(sha256)).decode())
    return str(answer.get("ETag", "")).strip('"') == md5


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class UploaderPool:
    """One S3Uploader per distinct destination client settings, created on first use.

    ``state_dir``: where multipart uploads keep their resumable state (``<state-dir>/uploads``).
    """

    def __init__(self, pool_size: int, state_dir: Path | None = None) -> None:
        self.pool_size = pool_size
        self.state_dir = state_dir
        self._uploaders: dict[tuple[Any, ...], S3Uploader] = {}
        self._lock = threading.Lock()

    def get(self, dest: DestinationConfig, timeout_s: float) -> S3Uploader:
        key = dest.client_key()
        with self._lock:
            uploader = self._uploaders.get(key)
            if uploader is None:
                uploader = self._uploaders[key] = S3Uploader(dest, timeout_s, self.pool_size, self.state_dir)
        return uploader

    def close(self) -> None:
        with self._lock:
            for uploader in self._uploaders.values():
                uploader.close()
            self._uploaders.clear()
