"""The ``s3`` source module: every object of a bucket under a prefix, streamed to disk.

Registry keys read (``source`` of a ``type: s3`` service):

``bucket``
    The bucket to read (required).
``prefix``
    Only keys starting with it; the file name is the key relative to the prefix's folder
    (the prefix up to its last ``/``), sub-folders kept: ``prefix: data`` keeps the names
    ``data/x`` and ``datax`` whole, ``prefix: data/`` names ``data/x`` as ``x``.
``include``, ``exclude``
    Glob patterns on an object's base name (the file-source template's keys).
``endpoint_url``
    An S3-compatible endpoint; ``null`` or ``""`` means AWS itself.
``region``
    The region to sign for.
``access_key_id``, ``secret_access_key``
    Secrets; when absent (or empty) boto3's default credential chain applies.

The module is a :class:`~module_system.FileSource`: it lists objects in key order
(ListObjectsV2, one page at a time, each page retried on its own, in a connection slot of the
endpoint) and downloads one object in 64 KiB reads, under the transfer watchdog, into the
sink the framework gives it; the framework filters, skips unchanged objects, enforces
``max_file_bytes``, retries (a retried download starts the file over) and runs ``transfers``
downloads at once. A page that says the listing is truncated without a continuation token
ends the listing with ListingIncomplete (the job fails once the objects listed so far have
landed). "Folder" markers (keys ending in ``/``) are skipped, and so is an object deleted
between listing and download (:class:`~module_system.FileVanished`).

One boto3 client is shared by every transfer and job of the run reading the same endpoint,
region and credentials (``ctx.resources.shared``; clients are thread-safe). Objects listed at
1 MiB or less are read with one GET of the AWS Common Runtime's S3 client instead
(``awscrt``, shared the same way; see ``common/s3_crt.py``): the request is built, signed and
read on the runtime's threads, not in ~1 ms of GIL-holding Python, with its retries off (the
job's retry policy retries the file), a read timeout after ``timeout_s`` without progress, and
a cancel when the run stops. Not used with ``crt: false`` or a proxy set in the environment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import structlog

from module_system import (
    CRT_MAX_BODY,
    CrtS3,
    Entry,
    FileSink,
    FileSource,
    FileVanished,
    ListingIncomplete,
    RunResources,
    Secret,
    StoredAt,
    crt_s3,
    s3_store,
    shut_response,
    watch,
)
from modules.s3_module.exceptions import (
    S3AuthError,
    S3SourceError,
    S3TransientError,
    translate_s3_error,
)

__all__ = ["S3Module", "s3_client_for", "s3_runtime_for"]

log = structlog.get_logger(__name__)

#: Bytes read from a response body at a time. Small enough that the transfer watchdog sees a
#: slow body progress (a read returns only when this much arrived): 64 KiB per ``timeout_s``.
CHUNK_SIZE = 64 * 1024
#: HTTP connections one shared client keeps; every transfer of every job on the same endpoint
#: shares them (20 workers x 8 transfers by default, plus listings).
MAX_POOL_CONNECTIONS = 256
#: botocore's own attempts per request; the job's retry policy does the rest.
BOTOCORE_MAX_ATTEMPTS = 2


class S3Module(FileSource):
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
            "endpoint_url": {"type": ["string", "null"], "default": None,
                             "description": "S3-compatible endpoint URL; null or empty for AWS."},
            "region": {"type": "string", "minLength": 1, "default": "us-east-1",
                       "description": "Region the requests are signed for."},
            "verify_tls": {"type": "boolean", "default": True,
                           "description": "Verify the endpoint's TLS certificate; false logs a warning."},
            "access_key_id": {"type": "string", "x-secret": True,
                              "description": "Access key id; absent: the AWS default credential chain."},
            "crt": {"type": "boolean", "default": True,
                    "description": "Objects up to 1 MiB are read with one GET of the AWS Common Runtime's S3 "
                                   "client (awscrt: C threads, no Python per request) instead of botocore; false: "
                                   "botocore reads every object. Never used with a proxy set in the environment."},
            "secret_access_key": {"type": "string", "x-secret": True,
                                  "description": "Secret access key; given together with access_key_id."},
        },
        "dependentRequired": {"access_key_id": ["secret_access_key"], "secret_access_key": ["access_key_id"]},
    }
    fatal_errors = (S3AuthError,)
    page_size: ClassVar[int] = 1000
    """Keys asked for per ListObjectsV2 page (S3's maximum)."""

    @classmethod
    def hosts(cls, source: Mapping[str, Any]) -> tuple[str, ...]:
        """The S3 endpoint; no cap unless the service sets ``limits.max_connections``."""
        return (source["endpoint_url"] or f"https://s3.{source['region']}.amazonaws.com",)

    def list_entries(self) -> Iterator[Entry]:
        """Each object under ``prefix``, in key order (folder markers left out).

        Raises :class:`~modules.s3_module.exceptions.S3SourceError` (``S3AuthError``,
        ``S3TransientError``) when the bucket cannot be listed or access is denied.
        """
        bucket, prefix = self.source["bucket"], self.source["prefix"]
        log.info("s3_listing_started", bucket=bucket, prefix=prefix)
        count = 0
        for obj in self._objects(self._client()):
            count += 1
            key = obj["Key"]
            yield Entry(self._name(key), f"s3://{bucket}/{key}", obj["Size"],
                        {"etag": str(obj.get("ETag", "")).strip('"'), "size": str(obj["Size"])},
                        handle=obj, modified=obj.get("LastModified"))
        log.info("s3_listing_finished", bucket=bucket, prefix=prefix, objects=count)

    def download(self, entry: Entry, sink: FileSink) -> Mapping[str, str]:
        """The object streamed into ``sink``; the marks of what was read (the response's ETag)."""
        obj = entry.handle
        try:
            response = self._get(self._client(), obj["Key"], sink, int(obj.get("Size", CRT_MAX_BODY + 1)))
        except S3SourceError as exc:
            if getattr(exc, "code", None) in ("NoSuchKey", "404"):
                raise FileVanished(f"{entry.source_uri} was deleted after the listing") from exc
            raise
        # What was read is what the response described, even if the object changed after it was listed.
        etag = str(response.get("ETag", entry.identity.get("etag", ""))).strip('"')
        if etag:  # a destination on the same store may copy this version server-side
            sink.stored_at = StoredAt(s3_store(self.source["endpoint_url"]), self.source["bucket"], obj["Key"], etag)
        return {"etag": str(response.get("ETag", entry.identity.get("etag", ""))).strip('"'), "size": str(sink.size),
                "last_modified": _iso(response.get("LastModified"), _iso(obj.get("LastModified"), ""))}

    def _client(self) -> Any:
        return s3_client_for(self.source, self.ctx.timeout_s, self.ctx.resources)

    # ------------------------------------------------------------------ listing

    def _objects(self, client: Any) -> Iterator[Mapping[str, Any]]:
        """Listed objects worth fetching, page by page, in key order.

        Raises ListingIncomplete, after the objects of the page, when a page says the listing
        is truncated but gives no continuation token (or the one it was asked with).
        """
        bucket, prefix = self.source["bucket"], self.source["prefix"]
        token: str | None = None
        host = type(self).hosts(self.source)[0]
        while True:
            with self.ctx.slot(host):
                page = self.ctx.retry.call(self._list_page, client, token, what=f"list s3://{bucket}/{prefix}")
            for obj in page.get("Contents", ()):
                if not obj["Key"].endswith("/"):
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

    def _get(self, client: Any, key: str, sink: FileSink, size: int) -> Mapping[str, Any]:
        """One download attempt from byte 0; the response metadata without its body. An object
        listed at :data:`~module_system.CRT_MAX_BODY` bytes or less is read by the AWS Common
        Runtime when it serves this endpoint (:func:`~module_system.crt_s3`: one request, sent
        off the GIL), a larger one by botocore in 64 KiB reads under the transfer watchdog."""
        bucket = self.source["bucket"]
        holder: dict[str, Any] = {}
        uri = f"s3://{bucket}/{key}"
        runtime = s3_runtime_for(self.source, client, self.ctx.timeout_s, self.ctx.resources) \
            if size <= CRT_MAX_BODY and self.source.get("crt", True) else None
        try:
            if runtime is not None:
                return runtime.get(bucket, key, sink.write, stop=self.ctx.stop)
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


def s3_client_for(source: Mapping[str, Any], timeout_s: float, resources: RunResources) -> Any:
    """The run's boto3 S3 client for ``source``'s endpoint, region and credentials (boto3 clients
    are thread-safe: every transfer of every job reading that endpoint shares one connection pool)."""
    endpoint = source["endpoint_url"] or None
    region = source["region"]
    access_key = source.get("access_key_id") or None
    secret_key = source.get("secret_access_key") or None
    # Secrets are kept as Secret objects in the key: equal values hash equal, never print.
    verify = bool(source["verify_tls"])
    cache_key = ("s3-source", endpoint, region, _as_secret(access_key), _as_secret(secret_key), float(timeout_s),
                 verify)

    def make() -> Any:
        if not verify:
            log.warning("tls_verification_disabled", endpoint_url=endpoint)
        log.debug("s3_client_created", endpoint_url=endpoint, region=region,
                  credentials="explicit" if access_key else "default_chain")
        return _new_client(endpoint, region, access_key, secret_key, timeout_s, verify)

    return resources.shared(cache_key, make)


def s3_runtime_for(source: Mapping[str, Any], client: Any, timeout_s: float, resources: RunResources) -> CrtS3 | None:
    """The run's AWS Common Runtime client for ``source``'s endpoint (shared like
    :func:`s3_client_for`'s), or None when botocore reads everything (see
    :func:`~module_system.crt_s3`)."""
    access_key, secret_key = source.get("access_key_id") or None, source.get("secret_access_key") or None
    cache_key = ("s3-source-crt", source["endpoint_url"] or None, source["region"], _as_secret(access_key),
                 _as_secret(secret_key), float(timeout_s), bool(source["verify_tls"]))

    def make() -> CrtS3 | None:
        return crt_s3(client, region=source["region"], timeout_s=timeout_s, connections=MAX_POOL_CONNECTIONS,
                      verify_tls=bool(source["verify_tls"]), access_key_id=_reveal(access_key),
                      secret_access_key=_reveal(secret_key))

    return resources.shared(cache_key, make)


def _as_secret(value: Any) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(str(value))


def _reveal(value: Any) -> str | None:
    return value.reveal() if isinstance(value, Secret) else value


def _new_client(endpoint: str | None, region: str, access_key: Any, secret_key: Any, timeout_s: float,
                verify: bool) -> Any:
    from botocore.config import Config

    from module_system import new_s3_client

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
