"""The ``sftp`` source module: files of an SSH server under a folder, over SFTP (paramiko).

Source keys it reads (see :attr:`SftpModule.source_schema`, which holds the defaults):
``host``, ``port``, ``user``; ``password``, ``private_key`` (key text) or ``private_key_path``,
``private_key_passphrase`` (the secrets are never logged); ``known_hosts``,
``host_key_fingerprint``, ``insecure_skip_host_key_check`` (host key checking, on by
default); ``path``, ``recursive``; and the file-source template's filters
(``include``/``exclude``, ``min_size``/``max_size``, ``newer_than``/``older_than``).

The module is a :class:`~module_system.FileSource`: it lists and downloads, the framework
filters, skips unchanged files (``incremental``), enforces ``max_file_bytes``, retries each
file, cuts the job off after 5 failures in a row, stops at file boundaries and runs
``transfers`` downloads at once, each in a connection slot of ``sftp://host:port``.

**Listing** (:meth:`SftpModule.list_entries`) walks the tree under ``path`` breadth first,
folder by folder, names sorted within a folder, and yields a folder's files as soon as that
folder is listed. A symbolic link is followed (stat): to a file, it is read; to a folder, it
is walked unless the walk has been there (by the server's real path, so a link back to a
parent is no loop). No deeper than :data:`MAX_DEPTH` folders: a deeper tree raises
``ListingIncomplete`` after the files it did list. Each folder is one listing call, retried
on its own, in a connection slot of the host. Identity: ``size`` and ``mtime`` (whole
seconds, as SFTP v3 gives it), so ``incremental: true`` skips unchanged files.

**Sessions** come from the run's pool (``ctx.resources.pooled``, keyed by host, port, user,
credentials, host key settings and timeout; see :mod:`modules.sftp_module.client`): each
listing call and each download checks one out and gives it back. A session the server
closed while idle is noticed (the transport is no longer active) and replaced.

**Downloads** (:meth:`SftpModule.download`) read the remote file in :data:`WINDOW` windows of
pipelined 32 KiB requests (paramiko's ``readv``), so memory stays flat whatever the file's
size and latency costs one round trip per window, under the transfer watchdog. A download cut
off mid-file keeps the bytes already written: the next try opens the file again and reads on
from ``sink.size`` (``resumable``), unless its size or mtime changed since the listing (then
it starts over). A file gone since the listing is skipped (``FileVanished``). A refused login
or host key fails the source at once (``fatal_errors``).
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import posixpath
import stat
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import paramiko
import structlog

from module_system import (
    Entry,
    FileSink,
    FileSource,
    FileVanished,
    JobContext,
    ListingIncomplete,
    ModuleSystemError,
    SourceConfig,
    host_of,
    watch,
)
from modules.sftp_module.client import (
    Login,
    SftpSession,
    netloc,
    open_session,
    translate,
)
from modules.sftp_module.exceptions import (
    SftpAuthError,
    SftpHostKeyError,
    SftpTransientError,
)

__all__ = ["BLOCK_SIZE", "MAX_DEPTH", "WINDOW", "SftpModule"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Bytes per write to the sink.
BLOCK_SIZE = 256 * 1024
#: Bytes asked for at once (in 32 KiB requests) and held at most while they arrive.
WINDOW = 4 * BLOCK_SIZE
#: Closed idle sessions dropped in a row before a use gives up (each opens a fresh one next).
_MAX_STALE = 16
#: Folders deeper than this under ``path`` are not walked; the listing is then incomplete.
MAX_DEPTH = 64


@dataclass(frozen=True)
class _Folder:
    path: str
    """Remote path, as reached (through links)."""
    real: str
    """The server's real path of it (loop guard)."""
    prefix: str
    """Its files' names start with this (``""`` for the root, then ``"sub/"``...)."""
    depth: int


@dataclass(frozen=True)
class _Item:
    """One name of a folder listing, links resolved."""

    name: str
    attrs: paramiko.SFTPAttributes
    real: str | None
    """For a folder: its real path."""


class _Stale(Exception):
    """A pooled session whose connection the server closed while it was idle."""


class _LocalWriteError(ModuleSystemError):
    """Writing a downloaded chunk to the temp file failed (not the network; not retried)."""


class SftpModule(FileSource):
    """Fetches the files under ``path`` on an SSH server over SFTP (see the module docstring)."""

    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["host", "user"],
        "not": {"anyOf": [{"required": ["private_key", "private_key_path"]},
                          {"required": ["host_key_fingerprint", "insecure_skip_host_key_check"],
                           "properties": {"insecure_skip_host_key_check": {"const": True}}}]},
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "Server host name or IP address."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 22, "description": "SSH port."},
            "user": {"type": "string", "minLength": 1, "description": "Login user name."},
            "password": {"type": "string", "x-secret": True,
                         "description": "Login password (secret: never logged). Tried after the key, if both are set."},
            "private_key": {"type": "string", "minLength": 1, "x-secret": True,
                            "description": "Private key text (OpenSSH or PEM; ed25519, ecdsa or rsa), e.g. "
                                           "`${SFTP_KEY}` (secret). Not with private_key_path."},
            "private_key_path": {"type": "string", "minLength": 1,
                                 "description": "File holding the private key; ~ expanded. Not with private_key."},
            "private_key_passphrase": {"type": "string", "x-secret": True,
                                       "description": "Passphrase of an encrypted private key (secret)."},
            "known_hosts": {"type": "string", "minLength": 1, "default": "~/.ssh/known_hosts",
                            "description": "OpenSSH known_hosts file the server's host key must be in (under "
                                           "`host`, or `[host]:port` off port 22); ~ expanded. An unknown or "
                                           "different key fails the source."},
            "host_key_fingerprint": {"type": "string", "pattern": r"^SHA256:[A-Za-z0-9+/]{43}=?$",
                                     "description": "Pin the server's host key instead of known_hosts: its "
                                                    "fingerprint as `ssh-keygen -lf` prints it (`SHA256:...`)."},
            "insecure_skip_host_key_check": {"type": "boolean", "default": False,
                                             "description": "Accept any host key (a warning on every "
                                                            "connection): anyone on the path can pose as the "
                                                            "server. For tests only."},
            "path": {"type": "string", "minLength": 1, "default": ".",
                     "description": "Remote folder to fetch from (relative paths start at the login folder)."},
            "recursive": {"type": "boolean", "default": True, "description": "Walk sub-folders of path."},
        },
    }

    #: OpenSSH starts refusing unauthenticated connections past 10 at once; a service's ``limits`` overrides this.
    default_max_connections: ClassVar[int | None] = 4
    resumable: ClassVar[bool] = True
    fatal_errors = (SftpAuthError, SftpHostKeyError)

    @classmethod
    def hosts(cls, source: SourceConfig) -> tuple[str, ...]:
        """``sftp://host:port``: every session of a job is to this host."""
        return (host_of(f"sftp://{netloc(source['host'])}:{source['port']}"),)

    def __init__(self, source: SourceConfig, ctx: JobContext) -> None:
        super().__init__(source, ctx)
        self._login = Login.of(source, ctx.timeout_s)
        self._host = type(self).hosts(source)[0]

    # -- listing ----------------------------------------------------------------------

    def list_entries(self) -> Iterator[Entry]:
        """Every file under ``path``, folder by folder, breadth first, names sorted in a folder.

        Raises SftpSourceError (SftpAuthError, SftpHostKeyError, SftpTransientError) when a
        folder cannot be listed; ListingIncomplete, after the files it listed, when the tree
        is deeper than MAX_DEPTH. Ends early, quietly, when the run stops."""
        if self.ctx.stop.is_set():
            return
        root = self._listing_call("sftp connect", self._login.base_uri, self._root)
        pending = deque([_Folder(root, root, "", 0)])
        seen = {root}
        too_deep: list[str] = []
        files = 0
        while pending:
            if self.ctx.stop.is_set():
                return
            folder = pending.popleft()
            items = self._listing_call(f"sftp list {folder.path}", self._uri(folder.path),
                                       functools.partial(self._list_folder, folder=folder))
            for item in items:
                mode = item.attrs.st_mode or 0
                path = posixpath.join(folder.path, item.name)
                if stat.S_ISDIR(mode):
                    if not self.source["recursive"] or item.real is None:
                        continue
                    if item.real in seen:
                        log.info("sftp_loop_skipped", path=path, real=item.real)
                    elif folder.depth >= MAX_DEPTH:
                        if not too_deep or too_deep[-1] != folder.path:
                            log.warning("sftp_depth_limit", path=folder.path, max_depth=MAX_DEPTH)
                            too_deep.append(folder.path)
                    else:
                        seen.add(item.real)
                        pending.append(_Folder(path, item.real, f"{folder.prefix}{item.name}/", folder.depth + 1))
                elif stat.S_ISREG(mode):
                    files += 1
                    yield self._entry(folder, item)
        log.info("sftp_tree_listed", path=root, files=files)
        if too_deep:
            raise ListingIncomplete(f"listing incomplete: {len(too_deep)} folder(s) at depth {MAX_DEPTH} have "
                                    f"sub-folders that were not listed (first: {too_deep[0]})",
                                    uri=self._uri(too_deep[0]))

    def _root(self, session: SftpSession) -> str:
        """The server's real path of ``path`` (a relative one starts at the login folder)."""
        path = self.source["path"]
        return str(session.sftp.normalize(path if path.startswith("/") else posixpath.join(session.home, path)))

    def _list_folder(self, session: SftpSession, folder: _Folder) -> list[_Item]:
        """The names of one folder, sorted, links followed (a broken link is left out)."""
        listed = []
        for attrs in session.sftp.listdir_iter(folder.path):  # read in full first: no other request may interleave
            session.saw()
            listed.append(attrs)
        items = []
        for attrs in listed:
            name = attrs.filename
            if name in (".", "..") or "/" in name:
                continue
            path = posixpath.join(folder.path, name)
            real: str | None = posixpath.join(folder.real, name)
            if stat.S_ISLNK(attrs.st_mode or 0):
                try:
                    target = session.sftp.stat(path)
                    real = session.sftp.normalize(path) if stat.S_ISDIR(target.st_mode or 0) else None
                    session.saw()
                except OSError as exc:
                    if getattr(exc, "errno", None) not in (errno.ENOENT, errno.EACCES):
                        raise
                    log.info("sftp_broken_link_skipped", path=path)
                    continue
                target.filename = name
                attrs = target
            items.append(_Item(name, attrs, real if stat.S_ISDIR(attrs.st_mode or 0) else None))
        return sorted(items, key=lambda i: i.name)

    def _entry(self, folder: _Folder, item: _Item) -> Entry:
        remote = posixpath.join(folder.path, item.name)
        size, mtime = item.attrs.st_size, item.attrs.st_mtime
        identity = {k: str(int(v)) for k, v in (("size", size), ("mtime", mtime)) if v is not None}
        modified = dt.datetime.fromtimestamp(mtime, dt.timezone.utc) if mtime is not None else None
        return Entry(folder.prefix + item.name, self._uri(remote), size, identity, handle=remote, modified=modified)

    def _listing_call(self, what: str, uri: str, op: Callable[[SftpSession], T]) -> T:
        """``op`` on a pooled session, in a connection slot of the host, under the retry policy."""

        def attempt() -> T:
            with self.ctx.slot(self._host):
                return self._on_session(what, uri, op)

        return self.ctx.retry.call(attempt, what=what)

    # -- downloading ------------------------------------------------------------------

    def download(self, entry: Entry, sink: FileSink) -> Mapping[str, str]:
        """Read ``entry`` into ``sink``, from ``sink.size`` on when an earlier try was cut off.

        Raises FileVanished when the file is gone; SftpTransientError when the connection fails
        or fewer bytes came than the file holds. Returns the identity of what was read."""
        marks = self._on_session(f"sftp get {entry.handle}", entry.source_uri,
                                 lambda s: self._retrieve(s, entry, sink))
        if sink.size != int(marks["size"]):
            raise SftpTransientError(f"{entry.source_uri}: got {sink.size} bytes, the file has {marks['size']}",
                                     uri=entry.source_uri)
        return marks

    def _retrieve(self, session: SftpSession, entry: Entry, sink: FileSink) -> dict[str, str]:
        """One try: open, compare with the listing, read on from ``sink.size`` to the end."""
        uri = entry.source_uri
        try:
            remote = session.sftp.open(entry.handle, "rb")
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                raise FileVanished(f"{uri} was deleted after the listing", uri=uri) from exc
            raise
        session.saw()  # the server answered: from here on a failure is not a stale session's
        with remote:
            attrs = remote.stat()
            size = attrs.st_size or 0
            marks = {"size": str(size), "mtime": str(int(attrs.st_mtime or 0))}
            offset = sink.size
            if offset and (marks != dict(entry.identity) or offset > size):
                log.info("sftp_download_restarted", uri=uri, discarded=offset, reason="changed")
                sink.reset()  # resuming would splice two versions of the file
                offset = 0
            elif offset:
                log.info("sftp_download_resumed", uri=uri, offset=offset)
            self._read(session, remote, offset, size, sink, uri)
        return marks

    def _read(self, session: SftpSession, remote: paramiko.SFTPFile, offset: int, size: int, sink: FileSink,
              uri: str) -> None:
        """Bytes ``offset`` to ``size`` in windows of pipelined requests, then whatever follows
        (the file grew: the size check after says so)."""
        position = offset
        while position < size:
            end = min(size, position + WINDOW)
            blocks = [(o, min(BLOCK_SIZE, end - o)) for o in range(position, end, BLOCK_SIZE)]
            for chunk in remote.readv(blocks):
                if not chunk:
                    return  # shorter than it was: the size check fails the try
                session.saw(len(chunk))
                self._write(sink, chunk, uri)
                position += len(chunk)
        remote.seek(position)
        while chunk := remote.read(BLOCK_SIZE):
            session.saw(len(chunk))
            self._write(sink, chunk, uri)

    @staticmethod
    def _write(sink: FileSink, chunk: bytes, uri: str) -> None:
        try:
            sink.write(chunk)
        except OSError as exc:  # the local disk (a full one raised DiskFullError already)
            raise _LocalWriteError(f"{uri}: cannot write the temp file: {exc}", uri=uri) from exc

    # -- sessions ---------------------------------------------------------------------

    def _on_session(self, what: str, uri: str, op: Callable[[SftpSession], T]) -> T:
        """``op`` on a live session of the run's pool under the transfer watchdog; library errors
        translated (:func:`~modules.sftp_module.client.translate`). Idle sessions the server closed
        meanwhile are dropped (all idle ones of this login with them) and a new one is opened."""
        answered: BaseException | None = None
        try:
            for _ in range(_MAX_STALE):
                try:
                    with self.ctx.resources.pooled(self._login, self._open_session) as session:
                        if not session.alive:
                            raise _Stale()  # the pool closes it
                        reused, progress = session.uses > 0, session.progress
                        try:
                            return self._use(session, what, uri, op)
                        except (EOFError, paramiko.SSHException, ConnectionError) as exc:
                            if reused and session.progress == progress:  # dead before it was checked out
                                raise _Stale() from exc
                            raise
                        except (FileVanished, FileNotFoundError, PermissionError) as exc:
                            answered = exc  # the server answered: the session is in step and goes back
                        except OSError as exc:
                            if type(exc) is not OSError or exc.errno is not None:
                                raise
                            answered = exc  # an SFTP status: a plain IOError with the server's words
                    break
                except _Stale:  # the server closed idle sessions: the others of this login too, likely
                    log.debug("sftp_stale_session_replaced", host=self._host)
                    self.ctx.resources.discard(self._login)
            else:
                raise SftpTransientError(f"{uri}: {_MAX_STALE} pooled sessions in a row were closed", uri=uri)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise translate(exc, uri, self._login) from exc
        if isinstance(answered, FileVanished):
            raise answered
        assert answered is not None
        raise translate(answered, uri, self._login) from answered

    def _use(self, session: SftpSession, what: str, uri: str, op: Callable[[SftpSession], T]) -> T:
        session.uses += 1
        with watch(what, self.ctx.stop, self.ctx.timeout_s, cut=session.cut,
                   stalled=lambda msg: SftpTransientError(msg, uri=uri)) as transfer:
            session.transfer = transfer
            try:
                return op(session)
            finally:
                session.transfer = None

    def _open_session(self) -> SftpSession:
        return open_session(self._login, self.ctx.stop)

    def _uri(self, remote: str) -> str:
        return f"{self._login.base_uri}{remote}"
