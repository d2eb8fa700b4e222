"""Errors of the SFTP module.

::

    SourceError
      SftpSourceError          the SFTP source could not be listed or read (no such folder, permission denied)
        SftpTransientError     + TransientSourceError: resets, timeouts, closed connections, SSH protocol failures
        SftpAuthError          the server refused the user's password or key, or the key cannot be read
        SftpHostKeyError       the server's host key is unknown or does not match (known_hosts or the pin)

Each carries keyword fields (``uri``, ``user``, ``fingerprint``), never a password or a key, and pickles.
``SftpAuthError`` and ``SftpHostKeyError`` fail the source at once (``fatal_errors``): every other file
would fail the same way, and retrying a host key mismatch only knocks on the same door again.
"""

from __future__ import annotations

from module_system import SourceError, TransientSourceError

__all__ = ["SftpAuthError", "SftpHostKeyError", "SftpSourceError", "SftpTransientError"]


class SftpSourceError(SourceError):
    """An SFTP source could not be listed or read."""


class SftpTransientError(SftpSourceError, TransientSourceError):
    """An SFTP failure that retrying on a fresh connection may cure."""


class SftpAuthError(SftpSourceError):
    """The server refused the login (password or key), or the private key cannot be loaded. Not retried."""


class SftpHostKeyError(SftpSourceError):
    """The server's host key is not in ``known_hosts``, differs from it, or differs from the pinned
    ``host_key_fingerprint``: the server may not be the one configured. Not retried."""
