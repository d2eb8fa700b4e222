"""Errors of the FTP module.

::

    SourceError
      FtpSourceError          the FTP source could not be listed or read (550, bad certificate, ...)
        FtpTransientError     + TransientSourceError: 4xx replies, resets, timeouts, closed connections
        FtpAuthError          530: the server refused the login

Each carries keyword fields (``uri``, ``code``, ``user``), never a password, and pickles.
"""

from __future__ import annotations

from module_system import SourceError, TransientSourceError

__all__ = ["FtpAuthError", "FtpSourceError", "FtpTransientError"]


class FtpSourceError(SourceError):
    """An FTP source could not be listed or read."""


class FtpTransientError(FtpSourceError, TransientSourceError):
    """An FTP failure that retrying on a fresh connection may cure."""


class FtpAuthError(FtpSourceError):
    """The server refused the user name or password (530). Not retried."""
