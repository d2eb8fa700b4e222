"""Errors of the S3 source module, and the translation of botocore's errors into them.

::

    SourceError                    common.exceptions
      S3SourceError                the bucket or an object cannot be read (missing bucket, ...)
        S3TransientError           + Transient: throttling, 5xx, refused/reset connections, timeouts
        S3AuthError                credentials refused or missing, access denied

Every error names the bucket (and key, when there is one) as fields and in its message;
none ever carries a credential. They pickle (fields are keyword arguments).
"""

from __future__ import annotations

from module_system import SourceError, Transient, is_transient

__all__ = ["S3AuthError", "S3SourceError", "S3TransientError", "translate_s3_error"]

#: S3 error codes that mean the credentials or the policy refuse the request.
AUTH_ERROR_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
     "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403"}
)


class S3SourceError(SourceError):
    """The S3 source cannot be listed or read. Fields: ``bucket``, ``key`` (or None), ``code``."""


class S3TransientError(S3SourceError, Transient):
    """An S3 failure that retrying may cure."""


class S3AuthError(S3SourceError):
    """S3 refused the credentials, or none were found."""


def translate_s3_error(exc: BaseException, bucket: str, key: str | None = None,
                       action: str = "read") -> S3SourceError:
    """The most specific :class:`S3SourceError` for a botocore/urllib3 error ``exc``.

    The caller raises the result ``from exc``. The message gives the error type, code
    and the first line of the library's text with every known secret scrubbed.
    """
    code = _error_code(exc)
    where = f"s3://{bucket}/{key}" if key is not None else f"bucket {bucket!r}"
    fields = {"bucket": bucket, "key": key, "code": code}
    if code == "NoSuchBucket":
        return S3SourceError(f"cannot {action} {where}: the bucket does not exist", **fields)
    if code in ("NoSuchKey", "404"):
        return S3SourceError(f"cannot {action} {where}: no such object", **fields)
    if code in AUTH_ERROR_CODES:
        return S3AuthError(f"cannot {action} {where}: access denied ({code})", **fields)
    if _is_missing_credentials(exc):
        return S3AuthError(f"cannot {action} {where}: no AWS credentials found", **fields)
    if is_transient(exc):
        return S3TransientError(f"cannot {action} {where}: {_describe(exc, code)}", **fields)
    return S3SourceError(f"cannot {action} {where}: {_describe(exc, code)}", **fields)


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(status) if status else None
    return None


def _describe(exc: BaseException, code: str | None) -> str:
    """Type, code and the first line of the library's text, with known secrets scrubbed."""
    from module_system import redact

    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    head = f"{type(exc).__name__} {code}" if code is not None else type(exc).__name__
    return redact(f"{head}: {text}" if text else head)


def _is_missing_credentials(exc: BaseException) -> bool:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    return isinstance(exc, (NoCredentialsError, PartialCredentialsError))
