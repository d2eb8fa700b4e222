"""Small PUTs and GETs through the AWS Common Runtime's S3 client (``awscrt``), off the GIL.

A PUT through botocore costs about a millisecond of Python per request (endpoint rules,
serialising, ~30 events, signing, parsing the answer), all of it holding the GIL: with a
thousand 100 KB files that is most of a core, which the job's fetching and validating then
wait for. The Common Runtime (``awscrt``, AWS's C client that ``s3transfer`` also uses)
builds, signs and sends the request on its own event-loop threads; the lane that asked only
waits on a future. Measured on the bench's S3 server: 1,000 PUTs of 100 KB took 1.7 CPU-s in
a plain boto3 client and 0.7 in this one.

What stays as it was: our :class:`~common.retry.RetryPolicy` retries (the runtime's own
retries are off, so every retry is counted and a retried PUT is HEAD-checked first); the
errors are botocore's (:class:`~botocore.exceptions.ClientError` with the store's code,
connection errors as botocore's), so every caller classifies them as before; the answer is
the headers a botocore ``put_object`` would return (``ETag``, ``ChecksumSHA256``...), which
the uploader verifies. A request that makes no progress for ``timeout_s`` (nothing sent,
no answer) is cancelled and fails as a read timeout, like botocore's ``read_timeout``.

Only single PUTs (the s3 destination) and GETs (the s3 source) of objects of at most
:data:`CRT_MAX_BODY` bytes go this way (one request each, at most that much buffered per
request); larger files, multipart uploads, HEADs, listings and manifests stay with botocore. The URL of a key comes from botocore itself
(one presigned URL per bucket, its query dropped), so addressing style, custom endpoints
and regions are botocore's. Not used (botocore serves every request) when ``awscrt`` is not
installed, the destination sets ``crt: false``, or a proxy is configured in the environment
(the runtime does not read ``HTTPS_PROXY``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from common.exceptions import TransferStopped

__all__ = ["CRT_MAX_BODY", "CrtS3", "crt_s3"]

#: The largest body sent through the runtime (the whole body is buffered while it is sent).
CRT_MAX_BODY = 1 << 20

#: Answer headers as botocore's PutObject names them.
_ANSWER = {"etag": "ETag", "content-length": "ContentLength", "content-type": "ContentType", "x-amz-checksum-sha256": "ChecksumSHA256", "x-amz-checksum-crc32": "ChecksumCRC32",
           "x-amz-version-id": "VersionId", "x-amz-server-side-encryption": "ServerSideEncryption"}
_ERROR_FIELD = re.compile(rb"<(Code|Message)>([^<]{0,1024})</\1>")
#: Answers the runtime reports by name alone: (S3 error code, message, HTTP status), as botocore would see them.
_S3_ANSWERS = {
    "AWS_ERROR_S3_SLOW_DOWN": ("SlowDown", "Please reduce your request rate.", 503),
    "AWS_ERROR_S3_INTERNAL_ERROR": ("InternalError", "The store failed internally.", 500),
    "AWS_ERROR_S3_REQUEST_TIME_TOO_SKEWED": ("RequestTimeTooSkewed", "The clock differs from the store's.", 403),
}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_POLL_S = 0.5


def crt_s3(client: Any, *, region: str, timeout_s: float, connections: int, verify_tls: bool,
           access_key_id: str | None = None, secret_access_key: str | None = None,
           checksum: str = "when_required") -> CrtS3 | None:
    """The runtime's requests for ``client``'s endpoint, or None when botocore must send them:
    ``awscrt`` missing, a proxy set in the environment, or no credentials at all (botocore
    then says so in its own words). Static keys when both are given (revealed), else the
    default credential chain."""
    credentials = (access_key_id, secret_access_key) if access_key_id and secret_access_key else None
    if any(os.environ.get(name) for name in _PROXY_VARS):
        return None
    try:
        import awscrt.s3  # noqa: F401 - only whether it is there
    except ImportError:
        return None
    if credentials is None:
        from common.s3_client import shared_credentials

        if shared_credentials() is None:
            return None
    return CrtS3(client, region=region, checksum=checksum, timeout_s=timeout_s, connections=connections,
                 verify_tls=verify_tls, credentials=credentials)


class CrtS3:
    """PUTs and GETs of small objects for one botocore S3 client's endpoint and credentials.

    The runtime client is made on first use and again in a forked child (its event loop's
    threads do not survive a fork).
    """

    def __init__(self, client: Any, *, region: str, checksum: str, timeout_s: float, connections: int,
                 verify_tls: bool, credentials: tuple[str, str] | None) -> None:
        self._botocore = client
        self._region, self._checksum, self._timeout_s = region, checksum, timeout_s
        self._connections, self._verify_tls, self._credentials = connections, verify_tls, credentials
        self._user_agent = str(client.meta.config.user_agent or "")
        self._lock = threading.Lock()
        self._runtime: Any = None
        self._pid = 0
        self._prefixes: dict[str, tuple[str, str, bool]] = {}

    # ------------------------------------------------------------------ requests

    def put(self, bucket: str, key: str, path: Path, size: int, sha256: str,
            headers: Mapping[str, str]) -> dict[str, Any]:
        """PUT the file at ``path`` (``size`` bytes, SHA-256 ``sha256`` in hex) to ``key`` with
        ``headers`` (metadata, content type, a checksum header); the answer as botocore's
        ``put_object`` gives it.

        The body is signed as botocore signs it: over plain http without a ``sha256``
        checksum header, its SHA-256 goes into the signature (``X-Amz-Content-SHA256``, the
        digest we streamed, not hashed again); else ``UNSIGNED-PAYLOAD`` (TLS, or the signed
        checksum header, protects the bytes)."""
        from awscrt.s3 import S3RequestType

        runtime, signing, request, https = self._request("PUT", bucket, key, [("Content-Length", str(size)),
                                                                             *headers.items()])
        if not https and "x-amz-checksum-sha256" not in headers:
            signing = signing.replace(signed_body_value=sha256)
        exchange = _Exchange()
        made = runtime.make_request(type=S3RequestType.PUT_OBJECT, request=request, operation_name="PutObject",
                                    send_filepath=str(path), checksum_config=self._checksum_config(),
                                    signing_config=signing, on_headers=exchange.on_headers,
                                    on_progress=exchange.on_progress)
        self._wait(made, exchange, "PutObject")
        return _answer(exchange.status, exchange.headers)

    def get(self, bucket: str, key: str, write: Callable[[bytes], object],
            stop: threading.Event | None = None) -> dict[str, Any]:
        """GET ``key`` (an object of at most :data:`CRT_MAX_BODY` bytes: one request), each piece
        of its body given to ``write`` in order as it arrives (an exception from ``write`` ends
        the request and is raised as it is); the answer's headers as botocore's ``get_object``
        gives them (``ETag``, ``LastModified``...), without a body. ``stop`` set: the request
        is cancelled and :class:`~common.exceptions.TransferStopped` raised."""
        from awscrt.s3 import S3RequestType

        runtime, signing, request, _ = self._request("GET", bucket, key, [])
        exchange = _Exchange()
        done = threading.Event()

        def on_body(chunk: bytes, **_: Any) -> None:
            exchange.on_progress()
            if not done.is_set():  # nothing written once the caller has its answer (a cancel that lagged)
                write(chunk)

        made = runtime.make_request(type=S3RequestType.GET_OBJECT, request=request, operation_name="GetObject",
                                    signing_config=signing, on_headers=exchange.on_headers, on_body=on_body)
        try:
            self._wait(made, exchange, "GetObject", stop)
        finally:
            done.set()
        got = _answer(exchange.status, exchange.headers)
        if "last-modified" in got["ResponseMetadata"]["HTTPHeaders"]:
            got["LastModified"] = parsedate_to_datetime(got["ResponseMetadata"]["HTTPHeaders"]["last-modified"])
        return got

    def _request(self, method: str, bucket: str, key: str,
                 headers: list[tuple[str, str]]) -> tuple[Any, Any, Any, bool]:
        """(the runtime's client, its signing config, the request for ``key``, https?)."""
        from awscrt.http import HttpHeaders, HttpRequest

        runtime, signing = self._client()
        host, path_prefix, https = self._prefix(bucket)
        sent = HttpHeaders([("Host", host), *headers])
        if self._user_agent:
            sent.set("User-Agent", self._user_agent)
        return runtime, signing, HttpRequest(method, path_prefix + quote(key, safe="/~"), sent), https

    def _wait(self, made: Any, exchange: _Exchange, operation: str, stop: threading.Event | None = None) -> None:
        """Until ``made`` finishes; cancelled after ``timeout_s`` without progress, or once
        ``stop`` is set. Raises its error as botocore would have."""
        future = made.finished_future
        while True:
            try:
                future.result(timeout=_POLL_S)
                return
            except TimeoutError:
                stopped = stop is not None and stop.is_set()
                if not stopped and time.monotonic() - exchange.moved < self._timeout_s:
                    continue
                made.cancel()
                try:
                    future.result(timeout=self._timeout_s)
                except BaseException:  # noqa: BLE001, S110 - cancelled: the timeout or the stop is the error
                    pass
                if stopped:
                    raise TransferStopped(f"{operation} cut off: the run is stopping") from None
                raise ReadTimeoutError(endpoint_url=self._endpoint_url()) from None
            except Exception as exc:
                raise self._translated(exc, operation) from exc

    def _checksum_config(self) -> Any:
        if self._checksum != "crc32":
            return None  # sha256: the caller's header; when_required: none
        from awscrt.s3 import S3ChecksumAlgorithm, S3ChecksumConfig, S3ChecksumLocation

        return S3ChecksumConfig(algorithm=S3ChecksumAlgorithm.CRC32, location=S3ChecksumLocation.HEADER)

    def _prefix(self, bucket: str) -> tuple[str, str, bool]:
        """(Host header, path before the key, https?) of ``bucket``, from one URL botocore makes."""
        known = self._prefixes.get(bucket)
        if known is None:
            url = self._botocore.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"},
                                                        ExpiresIn=60)
            parts = urlsplit(url)
            if not parts.path.endswith("/k"):
                raise ValueError(f"unexpected object URL for bucket {bucket!r}")
            known = self._prefixes[bucket] = (parts.netloc, parts.path[:-1], parts.scheme == "https")
        return known

    def _endpoint_url(self) -> str:
        return str(self._botocore.meta.endpoint_url)

    # ------------------------------------------------------------------ the runtime

    def _client(self) -> tuple[Any, Any]:
        """(the runtime's S3 client, its signing config: SigV4 for s3, unsigned payload)."""
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._runtime, self._pid = self._new_client(), os.getpid()
            return self._runtime

    def _new_client(self) -> tuple[Any, Any]:
        from awscrt.io import (
            ClientBootstrap,
            ClientTlsContext,
            DefaultHostResolver,
            EventLoopGroup,
            TlsContextOptions,
        )
        from awscrt.s3 import (
            S3Client,
            S3RequestTlsMode,
            S3RetryConfig,
            S3RetryMode,
            create_default_s3_signing_config,
        )

        https = urlsplit(self._endpoint_url()).scheme == "https"
        tls_options = None
        if https:
            context = TlsContextOptions()
            if not self._verify_tls:
                context.verify_peer = False
            elif bundle := _ca_bundle():
                context.override_default_trust_store_from_path(ca_filepath=bundle)
            tls_options = ClientTlsContext(context).new_connection_options()
        loops = EventLoopGroup()
        credentials = self._credential_provider()
        signing = create_default_s3_signing_config(region=self._region, credential_provider=credentials)
        return S3Client(
            bootstrap=ClientBootstrap(loops, DefaultHostResolver(loops)),
            region=self._region,
            signing_config=signing,
            tls_mode=S3RequestTlsMode.ENABLED if https else S3RequestTlsMode.DISABLED,
            tls_connection_options=tls_options,
            part_size=CRT_MAX_BODY * 8,
            multipart_upload_threshold=CRT_MAX_BODY * 16,  # never: only bodies <= CRT_MAX_BODY come here
            max_active_connections_override=self._connections,
            retry_config=S3RetryConfig(retry_mode=S3RetryMode.NONE),  # our RetryPolicy retries, and counts
            connect_timeout_ms=max(1, int(self._timeout_s * 1000)),
        ), signing

    def _credential_provider(self) -> Any:
        """Static keys when the destination sets them; else botocore's credential chain, asked
        again whenever the runtime signs (refreshable credentials stay fresh)."""
        from awscrt.auth import AwsCredentials, AwsCredentialsProvider

        if self._credentials is not None:
            return AwsCredentialsProvider.new_static(*self._credentials)
        from common.s3_client import shared_credentials

        chain = shared_credentials()

        def current() -> Any:
            if chain is None:
                raise ValueError("no AWS credentials found")
            frozen = chain.get_frozen_credentials()
            return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

        return AwsCredentialsProvider.new_delegate(current)

    # ------------------------------------------------------------------ errors

    def _translated(self, exc: BaseException, operation: str) -> BaseException:
        """A runtime error as botocore's: an answer from the store as ClientError (its
        ``Code``), a failed connection as botocore's connection errors."""
        from awscrt.exceptions import AwsCrtError
        from awscrt.s3 import S3ResponseError

        if isinstance(exc, S3ResponseError) and exc.status_code:
            fields = {name.decode(): value.decode("utf-8", "replace")
                      for name, value in _ERROR_FIELD.findall(exc.body or b"")}
            status = int(exc.status_code)
            return _client_error(fields.get("Code", str(status)), fields.get("Message", ""), status,
                                 {k.lower(): v for k, v in exc.headers or []}, operation)
        if isinstance(exc, AwsCrtError):
            name = exc.name
            if name in _S3_ANSWERS:  # an answer the runtime names itself, without its status or body
                return _client_error(*_S3_ANSWERS[name], {}, operation)
            if name.startswith("AWS_ERROR_S3_"):  # the runtime's own judgement of an answer: not retried
                return _client_error(name, exc.message, 0, {}, operation)
            if "TLS" in name:
                return SSLError(endpoint_url=self._endpoint_url(), error=name)
            if "CONNECT" in name or "DNS" in name or "HOST" in name:
                return EndpointConnectionError(endpoint_url=self._endpoint_url(), error=name)
            if "FILE" in name:
                return OSError(f"reading the file to upload failed: {name}")
            return ConnectionClosedError(endpoint_url=self._endpoint_url(), error=name)
        return exc

    def close(self) -> None:
        with self._lock:
            self._runtime = None  # the runtime shuts its client down once no request holds it


class _Exchange:
    """One request's answer as the runtime reports it (on its threads), and when it last moved."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.moved = time.monotonic()

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.moved = time.monotonic()
        self.status, self.headers = status_code, headers

    def on_progress(self, *_: Any, **__: Any) -> None:
        self.moved = time.monotonic()


def _client_error(code: str, message: str, status: int, headers: dict[str, str], operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}, operation)


def _answer(status: int, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """A PutObject answer as botocore's: its known headers under botocore's names."""
    lowered = {name.lower(): value for name, value in headers}
    answer: dict[str, Any] = {_ANSWER[name]: value for name, value in lowered.items() if name in _ANSWER}
    if str(answer.get("ContentLength", "")).isdigit():
        answer["ContentLength"] = int(answer["ContentLength"])
    answer["ResponseMetadata"] = {"HTTPStatusCode": status, "HTTPHeaders": lowered}
    return answer


def _ca_bundle() -> str | None:
    """The CA bundle botocore verifies against (``AWS_CA_BUNDLE``, else certifi's)."""
    configured = os.environ.get("AWS_CA_BUNDLE")
    if configured:
        return configured
    from botocore.httpsession import get_cert_path

    found = get_cert_path(True)
    return found if isinstance(found, str) else None
