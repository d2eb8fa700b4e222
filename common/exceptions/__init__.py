"""The module_system exception tree.

::

    ModuleSystemError              base of everything we raise on purpose
      ConfigError                  registry/batch/CLI mistakes: exit 2, one line, nothing runs
      PluginError                  a module failed to load or declares a bad schema
      SourceError                  a source could not be read (per module: FtpSourceError, ...)
        ListingIncomplete          the source was listed only in part: the job fails, what was listed lands
      UploadError                  put, verify or manifest write to S3 failed
      TransferStopped              the run stopped (Ctrl-C, --monitor-duration) and cut a read in flight
      DiskFullError                the temp filesystem is full (ENOSPC/EDQUOT): this file fails, the job goes on
    Transient                      mixin: retrying may help (timeouts, resets, 5xx, 429, FTP 4xx)

``Transient`` is a marker, not a second tree: ``class S3TransientError(S3SourceError,
Transient)``.  :func:`is_transient` is the single place that decides whether an
exception (ours or a library's) is worth retrying.

Every error carries fields (``job_id``, ``uri``, ``key``), never secrets, and pickles
so that it can cross process boundaries (Dask workers).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

__all__ = [
    "MAX_CONFIG_ERRORS",
    "RETRY_FTP_CODES",
    "RETRY_HTTP_CODES",
    "ConfigError",
    "DiskFullError",
    "ListingIncomplete",
    "ModuleSystemError",
    "PluginError",
    "SourceError",
    "TransferStopped",
    "Transient",
    "TransientSourceError",
    "TransientUploadError",
    "UploadError",
    "UploadWithdrawn",
    "is_transient",
]

#: HTTP status codes worth retrying (Scrapy's RETRY_HTTP_CODES plus 429).
RETRY_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504, 522, 524})
#: FTP reply codes worth retrying: 421 service closing, 425/426 data connection, 450/451 local.
RETRY_FTP_CODES = frozenset({"421", "425", "426", "450", "451", "452"})
#: S3 error codes worth retrying.
RETRY_S3_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
     "ServiceUnavailable", "RequestTimeTooSkewed", "503", "500", "502", "504"}
)


class ModuleSystemError(Exception):
    """Base class. Keyword fields are kept as attributes and survive pickling."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[ModuleSystemError], message: str, fields: dict[str, Any]) -> ModuleSystemError:
    return cls(message, **fields)


class Transient:
    """Mixin marking an error as retryable."""


#: The most mistakes one ConfigError lists (a file with more shows these and a count).
MAX_CONFIG_ERRORS = 20


class ConfigError(ModuleSystemError):
    """A registry, batch or command-line mistake. The message is the one line users see.

    When a file holds several mistakes, one ConfigError carries them all (up to
    :data:`MAX_CONFIG_ERRORS`): :attr:`problems` lists each as its own one-line ConfigError
    (with its ``file`` and ``key`` fields), and the message is their lines, one per line.
    """

    @property
    def problems(self) -> tuple[ConfigError, ...]:
        """Each mistake, one line each: this error alone unless it gathers several."""
        gathered = self.fields.get("errors")
        return tuple(gathered) if gathered else (self,)

    @property
    def omitted(self) -> int:
        """Mistakes found past :data:`MAX_CONFIG_ERRORS` and not listed."""
        return int(self.fields.get("not_shown", 0))

    @classmethod
    def gather(cls, errors: list[ConfigError], cap: int = MAX_CONFIG_ERRORS) -> ConfigError:
        """One ConfigError for ``errors`` (each may itself gather several), the first ``cap``
        distinct lines kept; a single error is returned as it is."""
        flat: list[ConfigError] = []
        omitted = 0
        seen: set[str] = set()
        for error in errors:
            omitted += error.omitted
            for one in error.problems:
                if one.message in seen:
                    continue
                seen.add(one.message)
                if len(flat) < cap:
                    flat.append(one)
                else:
                    omitted += 1
        if len(flat) == 1 and not omitted:
            return flat[0]
        lines = [e.message for e in flat]
        if omitted:
            lines.append(f"... and {omitted} more mistake(s) not shown")
        return cls("\n".join(lines), errors=tuple(flat), not_shown=omitted,
                   file=flat[0].fields.get("file") if flat else None)


class PluginError(ModuleSystemError):
    """A source module failed to import or declares an invalid ``source_schema``."""


class SourceError(ModuleSystemError):
    """A source could not be listed or read. Subclassed per module."""


class TransientSourceError(SourceError, Transient):
    """A source failure that retrying may cure."""


class UploadError(ModuleSystemError):
    """Uploading, verifying or writing a manifest to the destination failed."""


class TransientUploadError(UploadError, Transient):
    """An upload failure that retrying may cure (throttling, 5xx, resets)."""


class UploadWithdrawn(UploadError):
    """An upload put ahead of its file's verdict was not to be landed (``commit`` said no):
    it was withdrawn and nothing landed under the key. Field: ``key``."""

    @classmethod
    def of(cls, key: str) -> UploadWithdrawn:
        return cls(f"upload of {key} withdrawn: not to be landed", key=key)


class TransferStopped(ModuleSystemError):
    """The run stopped while a remote read was in flight; the watchdog cut it. Not retried:
    the job ends as ``cancelled`` (a signal) or ``timed_out`` (``--monitor-duration``)."""


class DiskFullError(ModuleSystemError):
    """No space left (ENOSPC) or quota exceeded (EDQUOT) while a file was written to the temp
    dir. Not a source failure and not retried: the file in hand is ``failed`` and the module
    goes on with the next one (a smaller file may still fit). Fields: ``name``, ``temp_dir``."""


_TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
     errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH}
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may help.

    The one classification used by every retry in the framework: our own errors say so
    with the :class:`Transient` mixin; library errors are judged by type and code.
    """
    if isinstance(exc, Transient):
        return True
    if isinstance(exc, ModuleSystemError):
        return False
    if isinstance(exc, (socket.timeout, TimeoutError, ConnectionError, EOFError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    return _is_transient_library_error(exc)


def _is_transient_library_error(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import (
            ClientError,
            HTTPClientError,
            IncompleteReadError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - botocore is a hard dependency
        return False
    # connection refused/reset/closed, timeouts, a body cut off mid-stream
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
        return True
    from urllib3.exceptions import NewConnectionError, ProtocolError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    if isinstance(exc, (ProtocolError, Urllib3Timeout, NewConnectionError)):
        return True
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return err.get("Code") in RETRY_S3_CODES or status in RETRY_HTTP_CODES
    import ftplib

    if isinstance(exc, ftplib.Error):
        return str(exc)[:3] in RETRY_FTP_CODES
    try:
        import requests
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code in RETRY_HTTP_CODES
    return False


class ListingIncomplete(SourceError):
    """The source could be listed only in part: a page limit was reached while the source
    still offered more (``paginate.max_pages``), or a listing said it was truncated without
    saying where it goes on (an S3 page with ``IsTruncated`` and no continuation token).

    A module raises it *after* yielding every file it did list, so those files land and
    the manifest records them; the job then ends ``failed`` with this message (exit 1) and
    the failed-jobs file re-runs it. An incomplete listing is never a success. Not
    transient: listing again would stop at the same place.
    """
