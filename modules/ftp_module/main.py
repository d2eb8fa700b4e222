"""The ``ftp`` source module: files of an FTP or explicit FTPS server, under a folder.

Source keys it reads (see :attr:`FtpModule.source_schema`, which holds the defaults):
``host``, ``port``, ``user``, ``password`` (secret), ``tls`` (explicit FTPS: AUTH TLS,
certificate verified, PROT P), ``ca_file``, ``verify_tls``, ``path``, ``recursive``,
``passive``; and the file-source template's ``include``/``exclude`` (globs on the base name).

The module is a :class:`~module_system.FileSource`: it lists and downloads, the framework
filters, skips unchanged files (``incremental``), enforces ``max_file_bytes``, retries each
file, cuts the job off after 5 failures in a row, stops at file boundaries and runs
``transfers`` downloads at once, each in a connection slot of ``ftp://host:port``.

**Listing** (:meth:`FtpModule.list_entries`) walks the tree under ``path`` breadth first,
folders and files in name order, and yields a folder's files as soon as that folder is
listed (downloads start while the walk goes on). Folders are listed with MLSD; a server
that does not implement it (500/502) is listed with NLST, telling folders from files by
trying to CWD into each entry. Loops (symbolic links) are walked once and the walk goes no
deeper than :data:`MAX_DEPTH` (see :mod:`modules.ftp_module.listing`); a deeper tree raises
``ListingIncomplete`` after the files it did list. Each folder is one listing call, retried
on its own, in a connection slot of the host.

**Sessions** come from the run's pool (``ctx.resources.pooled``, keyed by host, port, user,
password, TLS settings, passive and timeout; see :mod:`modules.ftp_module.client`): each
listing call and each download checks one out and gives it back, so parallel downloads run
on separate sessions and sessions are reused across files and jobs of a run. A session
that failed is closed; one found dead before its first reply (the server dropped it while
idle) is replaced at once, without using up a try.

**Downloads** (:meth:`FtpModule.download`) are RETRs in 1 MiB reads under the transfer
watchdog. A download cut off mid-file keeps the bytes already written: the next try asks
for the rest with ``REST <bytes so far>`` (``resumable``), unless the file's MDTM changed
meanwhile. A server that refuses REST (500/501/502/504) is remembered for the job and its
files start over from byte 0. A file the server answers 550 to, and no longer lists, was
deleted after the listing (``FileVanished``: skipped). A refused login (530) fails the
source at once.
"""

from __future__ import annotations

import datetime as dt
import ftplib
import functools
import posixpath
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

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
from modules.ftp_module.client import (
    FtpSession,
    Login,
    dropped_while_idle,
    netloc,
    open_session,
    translate,
)
from modules.ftp_module.exceptions import FtpAuthError, FtpTransientError
from modules.ftp_module.listing import (
    Listing,
    LoopGuard,
    parse_mlsd,
    parse_mlst,
    printable,
)

__all__ = ["MAX_DEPTH", "FtpModule"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Bytes per read of a download.
BLOCK_SIZE = 1 << 20
#: Folders deeper than this under ``path`` are not walked (guards against symlink loops); a tree
#: that goes deeper was listed in part: the job fails with ListingIncomplete once its files landed.
MAX_DEPTH = 64
#: Replies to MLSD meaning "this server does not do MLSD": list with NLST from then on.
_MLSD_UNSUPPORTED = ("500", "502")
#: Replies to REST meaning "this server cannot resume": start each cut-off file over instead.
_REST_UNSUPPORTED = ("500", "501", "502", "504")
#: Reply to RETR after REST meaning "no such offset" (the file shrank): start this file over.
_REST_OUT_OF_RANGE = "554"


@dataclass(frozen=True)
class _Folder:
    """A folder waiting to be listed."""

    path: str
    """Absolute remote path."""
    prefix: str
    """Its files' names start with this (``""`` for the root, then ``"sub/"``...)."""
    depth: int
    unique: str | None
    """The server's ``unique`` fact for it, when it gives one."""
    ancestors: tuple[str, ...]
    """Listing fingerprints of its ancestors that had no ``unique`` (loop detection)."""


class _StaleSession(Exception):
    """A session given back earlier failed before its first reply: the server had dropped it."""


class _LocalWriteError(ModuleSystemError):
    """Writing a downloaded chunk to the temp file failed (not the network; not retried)."""


class FtpModule(FileSource):
    """Fetches the files under ``path`` on an FTP/FTPS server (see the module docstring)."""

    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["host"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "Server host name or IP address."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 21,
                     "description": "Control connection port."},
            "user": {"type": "string", "default": "anonymous", "description": "Login user name."},
            "password": {"type": "string", "x-secret": True, "default": "",
                         "description": "Login password (secret: never logged)."},
            "tls": {"type": "boolean", "default": False,
                    "description": "Explicit FTPS: AUTH TLS with certificate verification, data "
                                   "connections protected (PROT P)."},
            "ca_file": {"type": ["string", "null"], "default": None,
                        "description": "PEM CA bundle to verify the server certificate; null uses the "
                                       "system trust store."},
            "verify_tls": {"type": "boolean", "default": True,
                           "description": "With tls: verify the server's certificate and host name; "
                                          "false logs a warning on every connection."},
            "path": {"type": "string", "minLength": 1, "default": "/",
                     "description": "Remote folder to fetch from (relative paths start at the login folder)."},
            "recursive": {"type": "boolean", "default": True, "description": "Walk sub-folders of path."},
            "passive": {"type": "boolean", "default": True,
                        "description": "Passive mode data connections (PASV/EPSV)."},
        },
    }

    #: Most FTP servers limit sessions per client; a service's ``limits`` overrides this.
    default_max_connections: ClassVar[int | None] = 4
    resumable: ClassVar[bool] = True
    fatal_errors = (FtpAuthError,)

    @classmethod
    def hosts(cls, source: SourceConfig) -> tuple[str, ...]:
        """``ftp://host:port``: every session of a job is to this host."""
        return (host_of(f"ftp://{netloc(source['host'])}:{source['port']}"),)

    def __init__(self, source: SourceConfig, ctx: JobContext) -> None:
        super().__init__(source, ctx)
        self._login = Login.of(source, ctx.timeout_s)
        self._host = type(self).hosts(source)[0]
        self._use_mlsd = True
        """False once the server answered MLSD with 500/502 (this job lists with NLST)."""
        self._use_rest = True
        """False once the server refused REST (this job's cut-off files start over)."""

    # -- listing ----------------------------------------------------------------------

    def list_entries(self) -> Iterator[Entry]:
        """Every file under ``path``, a folder's files in name order as soon as it is listed.

        Breadth first, sub-folders in name order; no folder or file taken twice (see
        :mod:`modules.ftp_module.listing` for the loop rules), no deeper than MAX_DEPTH: a
        deeper tree raises ListingIncomplete after the files that were listed. Raises
        FtpSourceError (FtpAuthError, FtpTransientError) when a folder cannot be listed.
        Ends early, quietly, when the run stops.
        """
        if self.ctx.stop.is_set():
            return
        root, root_unique = self._listing_call("ftp connect", self._login.base_uri, self._root)
        guard = LoopGuard()
        guard.enter(root_unique)
        pending = deque([_Folder(root, "", 0, root_unique, ())])
        too_deep: list[str] = []
        files = loops = 0
        while pending:
            if self.ctx.stop.is_set():
                return
            folder = pending.popleft()
            listing = self._listing_call(f"ftp list {printable(folder.path)}", self._uri(folder.path),
                                         functools.partial(self._list_dir, folder=folder.path))
            log.debug("ftp_listed", path=printable(folder.path), files=len(listing.files), dirs=len(listing.dirs))
            fingerprint = ""
            if folder.unique is None:  # no identity from the server: compare what the folder shows
                fingerprint = listing.fingerprint()
                if fingerprint in folder.ancestors:
                    loops += 1
                    log.info("ftp_loop_skipped", path=printable(folder.path), rule="same listing as an ancestor")
                    continue
            if self.source["recursive"] and listing.dirs:
                if folder.depth >= MAX_DEPTH:
                    log.warning("ftp_depth_limit", path=printable(folder.path), max_depth=MAX_DEPTH)
                    too_deep.append(folder.path)
                else:
                    loops += self._queue_subfolders(folder, listing, fingerprint, guard, pending)
            for name, identity, unique in sorted(listing.files, key=lambda f: f[0]):
                entry = self._entry(folder, name, identity)
                # Only a file the job takes claims its identity: with include ["*.txt"], a link
                # x.csv -> x.txt listed first must not make x.txt a duplicate.
                if self.wanted(entry) and not guard.take_file(unique):
                    log.info("ftp_duplicate_file_skipped", path=printable(entry.handle))
                    continue
                files += 1
                yield entry
        log.info("ftp_tree_listed", path=printable(root), files=files, loops_skipped=loops)
        if too_deep:
            raise ListingIncomplete(f"listing incomplete: {len(too_deep)} folder(s) at depth {MAX_DEPTH} "
                                    f"have sub-folders that were not listed (first: {printable(too_deep[0])})",
                                    uri=self._uri(too_deep[0]))

    def _queue_subfolders(self, folder: _Folder, listing: Listing, fingerprint: str, guard: LoopGuard,
                          pending: deque[_Folder]) -> int:
        """Queue the sub-folders not seen before; the number left out as loops."""
        loops = 0
        ancestors = (*folder.ancestors, fingerprint) if fingerprint else folder.ancestors
        for name, unique in sorted(listing.dirs):
            path = posixpath.join(folder.path, name)
            if not guard.enter(unique):
                loops += 1
                log.info("ftp_loop_skipped", path=printable(path), rule="folder already listed")
                continue
            pending.append(_Folder(path, f"{folder.prefix}{name}/", folder.depth + 1, unique, ancestors))
        return loops

    def _entry(self, folder: _Folder, name: str, identity: dict[str, str]) -> Entry:
        remote = posixpath.join(folder.path, name)
        size = identity.get("size", "")
        return Entry(folder.prefix + name, self._uri(remote), int(size) if size.isdigit() else None,
                     identity, handle=remote, modified=_fact_time(identity.get("modify", "")))

    def _root(self, ftp: FtpSession) -> tuple[str, str | None]:
        """The absolute folder ``path`` names (a relative one starts at the login folder), and its
        ``unique`` fact (MLST) when the server gives one."""
        path = self.source["path"]
        if not path.startswith("/"):
            path = posixpath.join(ftp.home, path)
        root = "/" + posixpath.normpath(path).lstrip("/")
        if not self._use_mlsd:
            return root, None
        try:
            return root, parse_mlst(ftp.sendcmd(f"MLST {root}"))
        except ftplib.error_perm:
            return root, None

    def _list_dir(self, ftp: FtpSession, folder: str) -> Listing:
        """The files (with identity) and sub-folders of one folder."""
        if self._use_mlsd:
            try:
                return parse_mlsd(list(ftp.mlsd(folder)))
            except ftplib.error_perm as exc:
                code = str(exc)[:3]
                if code in _MLSD_UNSUPPORTED:
                    self._use_mlsd = False
                    log.info("ftp_mlsd_unsupported", fallback="nlst", reply=code)
                elif code != "501":  # 501: not a folder to MLSD; let NLST tell
                    raise
        return _list_dir_nlst(ftp, folder)

    def _listing_call(self, what: str, uri: str, op: Callable[[FtpSession], T]) -> T:
        """``op`` on a pooled session, in a connection slot of the host, under the retry policy."""

        def attempt() -> T:
            with self.ctx.slot(self._host):
                return self._on_session(what, uri, op)

        return self.ctx.retry.call(attempt, what=what)

    # -- downloading ------------------------------------------------------------------

    def download(self, entry: Entry, sink: FileSink) -> None:
        """RETR ``entry`` into ``sink``, from ``sink.size`` on (REST) when a try was cut off.

        Raises FileVanished when the server answers 550 and no longer lists the file;
        FtpTransientError when the connection fails or the size differs from the listing's
        (after starting the sink over if it holds more: the file changed).
        """
        remote: str = entry.handle

        def write(chunk: bytes) -> None:
            try:
                sink.write(chunk)
            except OSError as exc:  # the local disk (a full one raised DiskFullError already)
                raise _LocalWriteError(f"{entry.source_uri}: cannot write the temp file: {exc}",
                                       uri=entry.source_uri) from exc

        self._on_session(f"ftp retr {printable(remote)}", entry.source_uri,
                         lambda ftp: self._retrieve(ftp, entry, sink, write))
        expected = entry.identity.get("size")
        if expected is not None and str(sink.size) != expected:
            got = sink.size
            if expected.isdigit() and got > int(expected):
                sink.reset()  # not a short read: the file changed, so the next try starts over
            raise FtpTransientError(f"{entry.source_uri}: got {got} bytes, the listing said {expected}",
                                    uri=entry.source_uri)

    def _retrieve(self, ftp: FtpSession, entry: Entry, sink: FileSink, write: Callable[[bytes], None]) -> None:
        """One try: RETR from ``sink.size`` (REST) or from byte 0."""
        remote, uri = entry.handle, entry.source_uri
        command = f"RETR {remote}"
        offset = sink.size
        if offset and not self._use_rest:
            offset = _restart(sink, uri, offset, reason="rest_unsupported")
        if offset and not _unchanged_since_listing(ftp, remote, entry.identity):
            offset = _restart(sink, uri, offset, reason="changed")  # resuming would splice two versions
        try:
            if not offset:
                ftp.retrieve_binary(command, write, BLOCK_SIZE)
                return
            log.info("ftp_download_resumed", uri=uri, offset=offset)
            try:
                ftp.retrieve_binary(command, write, BLOCK_SIZE, rest=offset)
            except ftplib.error_perm as exc:
                code = str(exc)[:3]
                if code in _REST_UNSUPPORTED:
                    self._use_rest = False
                    log.info("ftp_rest_unsupported", uri=uri, reply=code)
                elif code != _REST_OUT_OF_RANGE:
                    raise
                _restart(sink, uri, offset, reason=f"reply_{code}")
                ftp.retrieve_binary(command, write, BLOCK_SIZE)
        except ftplib.error_perm as exc:
            if str(exc)[:3] == "550" and _gone(ftp, remote):
                raise FileVanished(f"{uri} was deleted after the listing", uri=uri) from exc
            raise

    # -- sessions ---------------------------------------------------------------------

    def _on_session(self, what: str, uri: str, op: Callable[[FtpSession], T]) -> T:
        """``op`` on a session of the run's pool, under the transfer watchdog; library errors
        translated (:func:`~modules.ftp_module.client.translate`). A reused session found dead
        before its first reply is replaced once, at once (the idle ones of this login with it)."""
        try:
            return self._use_session(what, uri, op, reused_may_be_stale=True)
        except _StaleSession as stale:
            log.debug("ftp_stale_session_replaced", host=self._host, error=type(stale.__cause__).__name__)
            self.ctx.resources.discard(self._login)
            return self._use_session(what, uri, op, reused_may_be_stale=False)

    def _use_session(self, what: str, uri: str, op: Callable[[FtpSession], T], reused_may_be_stale: bool) -> T:
        refused: ftplib.error_perm | FileVanished | None = None
        try:
            with self.ctx.resources.pooled(self._login, self._open_session) as ftp:
                reused, replies = ftp.uses > 0, ftp.good_replies
                ftp.uses += 1
                try:
                    with watch(what, self.ctx.stop, self.ctx.timeout_s, cut=ftp.cut,
                               stalled=lambda msg: FtpTransientError(msg, uri=uri)) as transfer:
                        ftp.transfer = transfer
                        try:
                            return op(ftp)
                        finally:
                            ftp.transfer = None
                except (ftplib.error_perm, FileVanished) as exc:
                    refused = exc  # the server answered: the session is in step and goes back to the pool
                except BaseException as exc:
                    ftp.broken = True  # the pool closes it, without a QUIT: it may be out of step
                    if reused_may_be_stale and reused and ftp.good_replies == replies and dropped_while_idle(exc):
                        raise _StaleSession() from exc
                    raise
        except (ftplib.Error, OSError, EOFError) as exc:
            raise translate(exc, uri, self._login) from exc
        if isinstance(refused, FileVanished):
            raise refused
        assert refused is not None
        raise translate(refused, uri, self._login) from refused

    def _open_session(self) -> FtpSession:
        return open_session(self._login, self.ctx.stop)

    def _uri(self, remote: str) -> str:
        return f"{self._login.base_uri}{printable(remote)}"


def _list_dir_nlst(ftp: FtpSession, folder: str) -> Listing:
    """NLST, then CWD into each name to tell folders; SIZE and MDTM for identity."""
    try:
        names = ftp.nlst(folder)
    except ftplib.error_temp as exc:
        if str(exc)[:3] == "450" and "no files" in str(exc).lower():
            return Listing()  # ProFTPD's answer for an empty folder
        raise
    ftp.voidcmd("TYPE I")  # NLST switched to ASCII, where servers refuse SIZE
    listing = Listing()
    for raw in names:
        name = posixpath.basename(raw.rstrip("/"))
        if name in ("", ".", ".."):
            continue
        remote = posixpath.join(folder, name)
        try:
            ftp.cwd(remote)
        except ftplib.error_perm:
            listing.files.append((name, _size_and_mtime(ftp, remote), None))
        else:
            listing.dirs.append((name, None))
    return listing


def _size_and_mtime(ftp: ftplib.FTP, remote: str) -> dict[str, str]:
    """SIZE and MDTM of a file when the server answers them (optional commands)."""
    identity: dict[str, str] = {}
    try:
        identity["size"] = str(int(ftp.sendcmd(f"SIZE {remote}")[3:].strip()))
    except (ftplib.error_perm, ValueError):
        pass
    try:
        identity["modify"] = ftp.sendcmd(f"MDTM {remote}")[3:].strip()
    except ftplib.error_perm:
        pass
    return identity


def _unchanged_since_listing(ftp: ftplib.FTP, remote: str, identity: Mapping[str, str]) -> bool:
    """Whether the file still has the modification time the listing gave (MDTM), so that
    bytes resumed from it continue the same version. True when either side does not say."""
    listed = identity.get("modify")
    if not listed:
        return True
    try:
        now = ftp.sendcmd(f"MDTM {remote}")[3:].strip()
    except ftplib.error_perm:
        return True
    return now[:14] == listed[:14]


def _gone(ftp: ftplib.FTP, remote: str) -> bool:
    """After a 550 to RETR: whether the file is gone (MLST, else SIZE, says 550 too) rather than
    unreadable. A server that answers neither is taken at its word: gone."""
    for command in ("MLST", "SIZE"):
        try:
            ftp.sendcmd(f"{command} {remote}")
        except ftplib.error_perm as exc:
            if str(exc)[:3] == "550":
                return True
            continue  # the server does not know this command: ask the next
        return False
    return True


def _restart(sink: FileSink, uri: str, offset: int, reason: str) -> int:
    """Drop the ``offset`` bytes already fetched: the download starts over from byte 0."""
    sink.reset()
    log.info("ftp_download_restarted", uri=uri, discarded=offset, reason=reason)
    return 0


def _fact_time(fact: str) -> dt.datetime | None:
    """An MLSD ``modify`` fact (``YYYYMMDDHHMMSS[.sss]``, UTC) as an aware datetime, or None."""
    try:
        return dt.datetime.strptime(fact[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
