"""The ``s3`` source module: every object of a bucket under a prefix, streamed to disk.

Registry keys read (``source`` of a ``type: s3`` service):

``bucket``
    The bucket to read (required).
``prefix``
    Only keys starting with it; the file name is the key relative to the prefix's folder
    (the prefix up to its last ``/``), sub-folders kept: ``prefix: data`` keeps the names
    ``data/x`` and ``datax`` whole, ``prefix: data/`` names ``data/x`` as ``x``.
``include``
    Glob patterns (``fnmatch``, case-sensitive) on an object's base name; default all.
``endpoint_url``
    An S3-compatible endpoint; ``null`` or ``""`` means AWS itself.
``region``
    The region to sign for.
``access_key_id``, ``secret_access_key``
    Secrets; when absent (or empty) boto3's default credential chain applies.

Objects are listed in key order (ListObjectsV2, one page at a time, each page
retried on its own) and downloaded one at a time in 64 KiB reads, under the transfer watchdog, into a hashing
sink; a retried download starts the file over. A page that says the listing is truncated
without a continuation token ends the listing with ListingIncomplete (the job fails once
the objects listed so far have landed). "Folder" markers (keys ending in
``/``) are skipped, and so is an object deleted between listing and download.

One boto3 client is shared by every job of the process reading the same endpoint,
region and credentials (clients are thread-safe, sessions are not).
"""

from __future__ import annotations

import fnmatch
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import structlog

from common.exceptions import DiskFullError, ListingIncomplete
from common.file_sink import FileSink, FileTooLarge
from common.interfaces.base_module import BaseModule, FetchedFile, FetchFailed, Unchanged
from common.secret import Secret
from common.transfer_watchdog import ends_on_stop, shut_response, watch
from modules.s3_module.exceptions import S3AuthError, S3SourceError, S3TransientError, translate_s3_error

__all__ = ["S3Module", "s3_client_for"]

log = structlog.get_logger(__name__)

#: Bytes read from a response body at a time. Small enough that the transfer watchdog sees a
#: slow body progress (a read returns only when this much arrived): 64 KiB per ``timeout_s``.
CHUNK_SIZE = 64 * 1024
#: HTTP connections one shared client keeps; jobs on the same source share them.
MAX_POOL_CONNECTIONS = 50
#: botocore's own attempts per request; the job's retry policy does the rest.
BOTOCORE_MAX_ATTEMPTS = 2


class S3Module(BaseModule):
    """Reads objects from one S3 bucket (see the module docstring for its keys)."""

    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["bucket"],
        "properties": {
            "bucket": {"type": "string", "minLength": 1, "description": "Bucket to read."},
            "prefix": {"type": "string", "default": "",
                       "description": "Only keys starting with this; names are relative to its folder "
                                      "(the prefix up to its last `/`)."},
            "include": {"type": "array", "items": {"type": "string", "minLength": 1}, "default": ["*"],
                        "description": "Glob patterns on the object's base name; an object matching any is read."},
            "endpoint_url": {"type": ["string", "null"], "default": None,
                             "description": "S3-compatible endpoint URL; null or empty for AWS."},
            "region": {"type": "string", "minLength": 1, "default": "us-east-1",
                       "description": "Region the requests are signed for."},
            "verify_tls": {"type": "boolean", "default": True,
                           "description": "Verify the endpoint's TLS certificate; false logs a warning."},
            "access_key_id": {"type": "string", "x-secret": True,
                              "description": "Access key id; absent: the AWS default credential chain."},
            "secret_access_key": {"type": "string", "x-secret": True,
                                  "description": "Secret access key; given together with access_key_id."},
        },
        "dependentRequired": {"access_key_id": ["secret_access_key"], "secret_access_key": ["access_key_id"]},
    }
    page_size: ClassVar[int] = 1000
    """Keys asked for per ListObjectsV2 page (S3's maximum)."""

    @classmethod
    def hosts(cls, source: Mapping[str, Any]) -> tuple[str, ...]:
        """The S3 endpoint; no cap unless the service sets ``limits.max_connections``."""
        return (source["endpoint_url"] or f"https://s3.{source['region']}.amazonaws.com",)

    @ends_on_stop
    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed | Unchanged]:
        """Each object under ``prefix`` matching ``include``, in key order.

        Raises :class:`~modules.s3_module.exceptions.S3SourceError` (``S3AuthError``,
        ``S3TransientError``) when the bucket cannot be listed or access is denied; an
        object that cannot be read after retries is yielded as FetchFailed.
        """
        bucket, prefix = self.source["bucket"], self.source["prefix"]
        if self.ctx.stop.is_set():
            return
        client = s3_client_for(self.source, self.ctx.timeout_s)
        log.info("s3_listing_started", bucket=bucket, prefix=prefix)
        count = 0
        for obj in self._objects(client):
            if self.ctx.stop.is_set():
                log.info("s3_fetch_stopped", bucket=bucket, files=count)
                return
            uri = f"s3://{bucket}/{obj['Key']}"
            version = {"etag": str(obj.get("ETag", "")).strip('"'), "size": str(obj["Size"])}
            if self.ctx.unchanged(uri, version):
                yield Unchanged(self._name(obj["Key"]), uri, version)
                continue
            if obj["Size"] > self.ctx.max_file_bytes:
                yield FetchFailed(obj["Key"], uri, f"{obj['Size']} bytes, over max_file_bytes "
                                  f"({self.ctx.max_file_bytes})", status="rejected")
                continue
            try:
                fetched = self._download(client, obj, workdir)
            except S3AuthError:
                raise
            except FileTooLarge as exc:  # grew between listing and download
                yield FetchFailed(obj["Key"], uri, str(exc), status="rejected")
                continue
            except (S3SourceError, DiskFullError) as exc:
                yield FetchFailed(obj["Key"], uri, str(exc))
                continue
            if fetched is None:
                continue
            count += 1
            yield fetched
        log.info("s3_listing_finished", bucket=bucket, prefix=prefix, files=count)

    # ------------------------------------------------------------------ listing

    def _objects(self, client: Any) -> Iterator[Mapping[str, Any]]:
        """Listed objects worth fetching, page by page, in key order.

        Raises ListingIncomplete, after the objects of the page, when a page says the listing
        is truncated but gives no continuation token (or the one it was asked with).
        """
        bucket, prefix = self.source["bucket"], self.source["prefix"]
        patterns = tuple(self.source["include"])
        token: str | None = None
        while True:
            page = self.ctx.retry.call(self._list_page, client, token, what=f"list s3://{bucket}/{prefix}")
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                base = PurePosixPath(key).name
                if any(fnmatch.fnmatchcase(base, pattern) for pattern in patterns):
                    yield obj
            if not page.get("IsTruncated"):
                return
            following = page.get("NextContinuationToken")
            if not following or following == token:  # "there is more" but not where: never complete
                why = "a repeated" if following else "no"
                raise ListingIncomplete(f"listing incomplete: s3://{bucket}/{prefix} was listed as truncated "
                                        f"with {why} continuation token", uri=f"s3://{bucket}/{prefix}")
            token = following

    def _list_page(self, client: Any, token: str | None) -> Mapping[str, Any]:
        # One page per call rather than a paginator loop, so that a failed page is
        # retried alone, from its own continuation token.
        bucket = self.source["bucket"]
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": self.source["prefix"], "MaxKeys": self.page_size}
        if token:
            kwargs["ContinuationToken"] = token
        try:
            return client.list_objects_v2(**kwargs)  # type: ignore[no-any-return]
        except Exception as exc:
            if _is_library_error(exc):
                raise translate_s3_error(exc, bucket, action="list") from exc
            raise

    # ------------------------------------------------------------------ download

    def _download(self, client: Any, obj: Mapping[str, Any], workdir: Path) -> FetchedFile | None:
        """The object streamed into a sink; None when it vanished since the listing."""
        bucket, key = self.source["bucket"], obj["Key"]
        listed_etag = str(obj.get("ETag", "")).strip('"')
        identity = {"etag": listed_etag, "size": str(obj["Size"]),
                    "last_modified": _iso(obj.get("LastModified"), "")}
        sink = self.ctx.new_file(workdir, self._name(key), f"s3://{bucket}/{key}", identity)
        with sink:
            try:
                response = self.ctx.retry.call(self._get, client, key, sink, what=f"get s3://{bucket}/{key}")
            except S3SourceError as exc:
                if getattr(exc, "code", None) in ("NoSuchKey", "404"):
                    log.warning("s3_object_vanished", bucket=bucket, key=key)
                    sink.abort()
                    return None
                raise
            # What was read is what the response described, even if the object
            # changed after it was listed.
            sink.identity = {"etag": str(response.get("ETag", listed_etag)).strip('"'), "size": str(sink.size),
                             "last_modified": _iso(response.get("LastModified"), identity["last_modified"])}
            fetched = sink.finish()
        log.debug("s3_object_fetched", bucket=bucket, key=key, bytes=fetched.size, sha256=fetched.sha256)
        return fetched

    def _get(self, client: Any, key: str, sink: FileSink) -> Mapping[str, Any]:
        """One download attempt from byte 0; the response metadata without its body."""
        bucket = self.source["bucket"]
        sink.reset()
        holder: dict[str, Any] = {}
        uri = f"s3://{bucket}/{key}"
        try:
            with watch(f"get {uri}", self.ctx.stop, self.ctx.timeout_s, cut=lambda: shut_response(holder.get("body")),
                       stalled=lambda msg: S3TransientError(msg, bucket=bucket, key=key)) as transfer:
                response = client.get_object(Bucket=bucket, Key=key)
                body = holder["body"] = response.pop("Body")
                try:
                    for chunk in body.iter_chunks(CHUNK_SIZE):
                        transfer.arrived(len(chunk))
                        sink.write(chunk)
                finally:
                    body.close()
        except Exception as exc:
            if _is_library_error(exc):
                raise translate_s3_error(exc, bucket, key) from exc
            raise
        return response  # type: ignore[no-any-return]

    def _name(self, key: str) -> str:
        """``key`` relative to the folder of ``prefix`` (up to its last ``/``), sub-folders kept.

        ``prefix: data`` names ``data/x`` and ``datax`` as such, never ``x``: a prefix is cut
        only at a ``/``, so two keys cannot lose different parts and meet under one name.
        """
        folder = self.source["prefix"][: self.source["prefix"].rfind("/") + 1]
        return key[len(folder):]


def _iso(value: Any, default: str) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else default


def _is_library_error(exc: BaseException) -> bool:
    """botocore's and urllib3's errors, the only ones translated into S3 errors here.

    Local failures (a full disk while writing the sink) pass through untouched.
    """
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError as Urllib3Error

    return isinstance(exc, (BotoCoreError, ClientError, Urllib3Error))


# ---------------------------------------------------------------------- clients

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _reset_clients_after_fork() -> None:
    # A forked child must not reuse the parent's connection pools (or a held lock).
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_clients_after_fork)


def s3_client_for(source: Mapping[str, Any], timeout_s: float) -> Any:
    """The process-wide boto3 S3 client for ``source``'s endpoint, region and credentials."""
    endpoint = source["endpoint_url"] or None
    region = source["region"]
    access_key = source.get("access_key_id") or None
    secret_key = source.get("secret_access_key") or None
    # Secrets are kept as Secret objects in the key: equal values hash equal, never print.
    verify = bool(source["verify_tls"])
    cache_key = (endpoint, region, _as_secret(access_key), _as_secret(secret_key), float(timeout_s), verify)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            if not verify:
                log.warning("tls_verification_disabled", endpoint_url=endpoint)
            client = _new_client(endpoint, region, access_key, secret_key, timeout_s, verify)
            _clients[cache_key] = client
            log.debug("s3_client_created", endpoint_url=endpoint, region=region,
                      credentials="explicit" if access_key else "default_chain")
        return client


def _as_secret(value: Any) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(str(value))


def _reveal(value: Any) -> str | None:
    return value.reveal() if isinstance(value, Secret) else value


def _new_client(endpoint: str | None, region: str, access_key: Any, secret_key: Any, timeout_s: float,
                verify: bool) -> Any:
    from botocore.config import Config

    from common.s3_client import new_s3_client

    config = Config(
        max_pool_connections=MAX_POOL_CONNECTIONS,
        retries={"mode": "standard", "total_max_attempts": BOTOCORE_MAX_ATTEMPTS},
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        tcp_keepalive=True,
    )
    return new_s3_client(
        config, endpoint_url=endpoint, region_name=region, verify=verify,
        aws_access_key_id=_reveal(access_key), aws_secret_access_key=_reveal(secret_key),
    )
