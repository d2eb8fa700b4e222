"""The ``ftp`` source module: files of an FTP or explicit FTPS server, under a folder.

Source keys it reads (see :attr:`FtpModule.source_schema`, which holds the defaults):
``host``, ``port``, ``user``, ``password`` (secret), ``tls`` (explicit FTPS: AUTH TLS,
certificate verified, PROT P), ``ca_file``, ``path``, ``include`` (globs on the base
name), ``recursive``, ``passive``.

One control connection serves the whole job, listing and downloads alike: opened on
first use, re-opened after a transient failure, closed in :meth:`FtpModule.close`.
Folders are listed with MLSD; a server that does not implement it (500/502) is listed
with NLST, telling folders from files by trying to CWD into each entry.

A download cut off mid-file keeps the bytes already written: the next try, on a fresh
connection, asks for the rest with ``REST <bytes so far>``. A server that refuses REST
(500/501/502/504) is remembered for the job and its files start over from byte 0.
"""

from __future__ import annotations

import fnmatch
import ftplib
import posixpath
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import structlog

from common.exceptions import DiskFullError, ListingIncomplete, Transient, TransferStopped
from common.file_sink import FileSink, FileTooLarge
from common.interfaces.base_module import BaseModule, FetchedFile, FetchFailed, JobContext, SourceConfig, Unchanged
from common.secret import redact, reveal
from common.transfer_watchdog import Transfer, ends_on_stop, shut_socket, watch
from modules.ftp_module.exceptions import FtpAuthError, FtpSourceError, FtpTransientError
from modules.ftp_module.listing import Listing, LoopGuard, parse_mlsd, parse_mlst, printable

__all__ = ["FtpModule"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Bytes per read of a download.
BLOCK_SIZE = 1 << 20
#: This many files failing one after another means the source itself is failing.
MAX_FAILURES_IN_A_ROW = 5
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
class _Entry:
    """A remote file found by the listing."""

    remote: str
    """Absolute remote path."""
    name: str
    """Path relative to the configured ``path``, ``/`` separated; bytes of a name that were not
    UTF-8 are kept as surrogates (``surrogateescape``), which the key rule turns into ``_`` plus
    a digest of the raw name (common/safe_names.py), while URIs and logs show them as ``\\xNN``."""
    identity: dict[str, str] = field(default_factory=dict)


class _Ftp(ftplib.FTP):
    """An FTP session that remembers its transfer type, so a file costs no ``TYPE I`` of its own.

    ftplib's ``retrbinary`` sends ``TYPE I`` before every RETR: one more round trip per
    file for the client and the server. :meth:`retrieve_binary` sends it only when the
    session is not known to be binary, i.e. after a listing switched it to ASCII
    (``retrlines`` sends ``TYPE A``), after a failed ``TYPE``, or on a new connection.
    """

    _type: str | None = None
    """The transfer type the server last accepted; None when unknown."""
    _data: socket.socket | None = None
    """The data connection of the transfer in flight, for :meth:`cut`."""
    transfer: Transfer | None = None
    """The watched transfer the bytes of data connections count towards (see :meth:`FtpModule._call`)."""

    def cut(self) -> None:
        """Shut the data and control sockets (from the watchdog thread): the blocked read returns."""
        shut_socket(self._data)
        shut_socket(self.sock)

    def _arrived(self, n: int) -> None:
        if self.transfer is not None:
            self.transfer.arrived(n)

    def tolerant_replies(self) -> None:
        """Decode control replies with ``surrogateescape`` too: a reply that quotes a name the
        server sent in another encoding must not raise UnicodeDecodeError. Called right after
        the greeting and after ``AUTH TLS`` (which make ``self.file``), when nothing is buffered."""
        if self.sock is not None:
            self.file = self.sock.makefile("r", encoding=self.encoding, errors="surrogateescape")

    def getline(self) -> str:
        """ftplib's ``getline``; a whole control reply line tells the watchdog the server is alive."""
        line = super().getline()
        if self.transfer is not None:
            self.transfer.answered()
        return line

    def sendcmd(self, cmd: str) -> str:
        return self._typed(cmd, super().sendcmd)

    def voidcmd(self, cmd: str) -> str:
        return self._typed(cmd, super().voidcmd)

    def _typed(self, cmd: str, send: Callable[[str], str]) -> str:
        if cmd[:5].upper() != "TYPE ":
            return send(cmd)
        self._type = None  # unknown until the server says yes
        reply = send(cmd)
        self._type = cmd[5:].strip().upper()
        return reply

    def retrieve_binary(self, cmd: str, callback: Callable[[bytes], None], blocksize: int,
                        rest: int | None = None) -> str:
        """``retrbinary`` without its per-file ``TYPE I`` when the session is binary already."""
        if self._type != "I":
            self.voidcmd("TYPE I")
        with self.transfercmd(cmd, rest) as conn:
            self._data = conn
            try:
                while data := conn.recv(blocksize):
                    self._arrived(len(data))
                    callback(data)
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()
            finally:
                self._data = None
        return self.voidresp()

    def putline(self, line: str) -> None:
        """ftplib's ``putline``; a name the listing decoded with ``surrogateescape`` goes back
        to the server as the bytes it sent (a folder with a non-UTF-8 name can be listed)."""
        if "\r" in line or "\n" in line:
            raise ValueError("an illegal newline character should not be contained")
        assert self.sock is not None
        self.sock.sendall((line + "\r\n").encode(self.encoding, errors="surrogateescape"))

    def retrlines(self, cmd: str, callback: Callable[[str], Any] | None = None) -> str:
        """ftplib's ``retrlines`` (MLSD, NLST), counting the bytes for the watchdog and decoding
        names that are not valid UTF-8 with ``surrogateescape`` instead of failing the listing."""
        callback = callback or ftplib.print_line
        self.sendcmd("TYPE A")
        with self.transfercmd(cmd) as conn, conn.makefile("r", encoding=self.encoding,
                                                          errors="surrogateescape") as fp:
            self._data = conn
            try:
                while True:
                    line = fp.readline(self.maxline + 1)
                    if len(line) > self.maxline:
                        raise ftplib.Error(f"got more than {self.maxline} bytes")
                    if not line:
                        break
                    self._arrived(len(line))
                    callback(line[:-2] if line[-2:] == "\r\n" else line[:-1] if line[-1:] == "\n" else line)
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()
            finally:
                self._data = None
        return self.voidresp()


class _FtpTls(_Ftp, ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session.

    Servers that insist on session reuse (vsftpd ``require_ssl_reuse``, FileZilla,
    pyftpdlib on request) answer 425/522 to a data connection with a fresh session.
    """

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = getattr(self.sock, "session", None)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


class FtpModule(BaseModule):
    """Fetches the files under ``path`` on an FTP/FTPS server matching ``include``."""

    source_schema: ClassVar[dict[str, Any]] = {
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
            "include": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                        "default": ["*"], "description": "Glob patterns on the file's base name; a file "
                                                          "matching any of them is fetched."},
            "recursive": {"type": "boolean", "default": True, "description": "Walk sub-folders of path."},
            "passive": {"type": "boolean", "default": True,
                        "description": "Passive mode data connections (PASV/EPSV)."},
        },
    }

    #: Most FTP servers limit sessions per client; a service's ``limits`` overrides this.
    default_max_connections: ClassVar[int | None] = 4

    @classmethod
    def hosts(cls, source: SourceConfig) -> tuple[str, ...]:
        """One control connection per job, to ``host:port``."""
        return (f"ftp://{source['host']}:{source['port']}",)

    def __init__(self, source: SourceConfig, ctx: JobContext) -> None:
        super().__init__(source, ctx)
        self._host: str = source["host"]
        self._port: int = source["port"]
        self._include: tuple[str, ...] = tuple(source["include"])
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        self._base_uri = f"ftp://{netloc}:{self._port}"
        self._ftp: _Ftp | None = None
        self._root: str | None = None
        self._use_mlsd = True
        self._use_rest = True
        self._too_deep: list[str] = []
        """Folders at MAX_DEPTH whose sub-folders were not listed."""

    # -- the contract ---------------------------------------------------------------

    @ends_on_stop
    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed | Unchanged]:
        """List the tree under ``path``, then stream each matching file, in name order.

        A file that still fails after retries is yielded as FetchFailed; a login failure,
        or MAX_FAILURES_IN_A_ROW files failing one after another, fails the source; a tree
        deeper than MAX_DEPTH raises ListingIncomplete after the files it did list.
        """
        entries = self._list_tree()
        in_a_row = 0
        for done, entry in enumerate(entries):
            if self.ctx.stop.is_set():
                log.info("ftp_fetch_stopped", fetched=done, remaining=len(entries) - done)
                return
            uri = self._uri(printable(entry.remote))
            version = {k: entry.identity[k] for k in ("size", "modify") if k in entry.identity}
            if "size" in version and self.ctx.unchanged(uri, version):
                yield Unchanged(entry.name, uri, version)
                continue
            if int(entry.identity.get("size", "0")) > self.ctx.max_file_bytes:
                yield FetchFailed(entry.name, uri, f"{entry.identity['size']} bytes, over max_file_bytes "
                                  f"({self.ctx.max_file_bytes})", status="rejected")
                continue
            try:
                fetched = self._download(workdir, entry)
            except FtpAuthError:
                raise
            except FileTooLarge as err:  # grew past the limit while downloading
                yield FetchFailed(entry.name, uri, str(err), status="rejected")
                continue
            except DiskFullError as err:  # local, not the server's fault: not retried, not counted
                yield FetchFailed(entry.name, uri, str(err))
                continue
            except FtpSourceError as err:
                in_a_row += 1
                if in_a_row >= MAX_FAILURES_IN_A_ROW:
                    raise
                yield FetchFailed(entry.name, uri, str(err))
                continue
            in_a_row = 0
            yield fetched
        if self._too_deep:
            raise ListingIncomplete(f"listing incomplete: {len(self._too_deep)} folder(s) at depth {MAX_DEPTH} "
                                    f"have sub-folders that were not listed (first: {printable(self._too_deep[0])})",
                                    uri=self._uri(printable(self._too_deep[0])))

    def close(self) -> None:
        """Say QUIT and close the control connection; never raises."""
        self._drop(polite=True)

    # -- listing ----------------------------------------------------------------------

    def _list_tree(self) -> list[_Entry]:
        """Every file under the root matching ``include``, sorted by relative name.

        Breadth first, folders in name order; no folder or file taken twice (see
        :mod:`modules.ftp_module.listing` for the loop rules), no deeper than MAX_DEPTH.
        """
        root = self._call("ftp connect", self._base_uri, lambda ftp: self._root)
        assert root is not None
        found: list[_Entry] = []
        guard = LoopGuard()
        root_unique = self._call(f"ftp mlst {root}", self._uri(root), lambda ftp: self._unique_of(ftp, root))
        guard.enter(root_unique)
        # (folder, its relative prefix, depth, its unique or None, fingerprints of its ancestors' listings)
        pending: deque[tuple[str, str, int, str | None, tuple[str, ...]]] = deque([(root, "", 0, root_unique, ())])
        loops = 0
        while pending:
            if self.ctx.stop.is_set():
                break
            folder, prefix, depth, own, ancestors = pending.popleft()
            listing = self._call(f"ftp list {printable(folder)}", self._uri(printable(folder)),
                                 lambda ftp, d=folder: self._list_dir(ftp, d))
            log.debug("ftp_listed", path=printable(folder), files=len(listing.files), dirs=len(listing.dirs))
            fingerprint = ""
            if own is None:  # no identity from the server: compare what the folder shows
                fingerprint = listing.fingerprint()
                if fingerprint in ancestors:  # no identity from the server: the same listing as an ancestor
                    loops += 1
                    log.info("ftp_loop_skipped", path=printable(folder), rule="same listing as an ancestor")
                    continue
            for name, identity, unique in sorted(listing.files, key=lambda f: f[0]):
                if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self._include):
                    continue
                if not guard.take_file(unique):
                    log.info("ftp_duplicate_file_skipped", path=printable(posixpath.join(folder, name)))
                    continue
                remote = posixpath.join(folder, name)
                found.append(_Entry(remote, prefix + name, identity))
            if not self.source["recursive"]:
                continue
            if depth >= MAX_DEPTH and listing.dirs:
                log.warning("ftp_depth_limit", path=printable(folder), max_depth=MAX_DEPTH)
                self._too_deep.append(folder)
                continue
            for name, unique in sorted(listing.dirs):
                if not guard.enter(unique):
                    loops += 1
                    log.info("ftp_loop_skipped", path=printable(posixpath.join(folder, name)),
                             rule="folder already listed")
                    continue
                pending.append((posixpath.join(folder, name), f"{prefix}{name}/", depth + 1, unique,
                                (*ancestors, fingerprint) if fingerprint else ancestors))
        found.sort(key=lambda e: e.name)
        log.info("ftp_tree_listed", path=printable(root), files=len(found), loops_skipped=loops)
        return found

    def _unique_of(self, ftp: ftplib.FTP, folder: str) -> str | None:
        """The folder's ``unique`` fact (MLST), or None when the server does not give it."""
        if not self._use_mlsd:
            return None
        try:
            return parse_mlst(ftp.sendcmd(f"MLST {folder}"))
        except ftplib.error_perm:
            return None

    def _list_dir(self, ftp: ftplib.FTP, folder: str) -> Listing:
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
        return self._list_dir_nlst(ftp, folder)

    def _list_dir_nlst(self, ftp: ftplib.FTP, folder: str) -> Listing:
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

    # -- downloading ------------------------------------------------------------------

    def _download(self, workdir: Path, entry: _Entry) -> FetchedFile:
        """Stream one file into a hashing sink under the retry policy.

        A try cut off mid-file keeps what the sink holds: the sink only ever receives whole
        ``recv`` chunks, so ``sink.size`` bytes are on disk and hashed, each once, and the
        next try resumes at that offset (see :meth:`_retrieve`). Nothing is written twice,
        so the running SHA-256 stays that of the remote file.
        """
        uri = self._uri(printable(entry.remote))
        with self.ctx.new_file(workdir, entry.name, uri, entry.identity) as sink:
            torn = False  # a local write failed inside a chunk: the file may hold part of it

            def write(chunk: bytes) -> None:
                nonlocal torn
                try:
                    sink.write(chunk)
                except BaseException:
                    torn = True
                    raise

            def retrieve(ftp: _Ftp) -> None:
                nonlocal torn
                if torn:
                    sink.reset()
                    torn = False
                try:
                    self._retrieve(ftp, entry, uri, sink, write)
                except (ftplib.Error, OSError, EOFError, FtpSourceError):
                    raise  # _call translates, and drops the connection when it is worth a retry
                except BaseException:
                    # Left mid-transfer (e.g. the sink refused a chunk past max_file_bytes):
                    # the server's reply to RETR is still pending, so this session is out of step.
                    self._drop(polite=False)
                    raise

            self._call(f"ftp retr {printable(entry.remote)}", uri, retrieve)
            fetched = sink.finish()
        log.debug("file_fetched", uri=uri, bytes=fetched.size)
        return fetched

    def _retrieve(self, ftp: _Ftp, entry: _Entry, uri: str, sink: FileSink,
                  write: Callable[[bytes], None]) -> None:
        """One try: RETR from ``sink.size`` (REST) or from byte 0, then check the size.

        Raises FtpTransientError when the size differs from the listing's, after starting
        the sink over if it holds more than the listing said (the file changed).
        """
        command = f"RETR {entry.remote}"
        offset = sink.size
        if offset and not self._use_rest:
            self._restart(sink, uri, offset, reason="rest_unsupported")
            offset = 0
        if offset and not _unchanged_since_listing(ftp, entry):
            self._restart(sink, uri, offset, reason="changed")  # resuming would splice two versions
            offset = 0
        if offset:
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
                self._restart(sink, uri, offset, reason=f"reply_{code}")
                ftp.retrieve_binary(command, write, BLOCK_SIZE)
        else:
            ftp.retrieve_binary(command, write, BLOCK_SIZE)
        expected = entry.identity.get("size")
        if expected is not None and str(sink.size) != expected:
            got = sink.size
            if expected.isdigit() and got > int(expected):
                sink.reset()  # not a short read: the file changed, so the next try starts over
            raise FtpTransientError(f"{uri}: got {got} bytes, the listing said {expected}", uri=uri)

    @staticmethod
    def _restart(sink: FileSink, uri: str, offset: int, reason: str) -> None:
        """Drop the ``offset`` bytes already fetched: the download starts over from byte 0."""
        sink.reset()
        log.info("ftp_download_restarted", uri=uri, discarded=offset, reason=reason)

    # -- connection and error translation -------------------------------------------

    def _call(self, what: str, uri: str, op: Callable[[_Ftp], T]) -> T:
        """``op(connection)`` under the retry policy, reconnecting after a transient failure."""

        def attempt() -> T:
            try:
                ftp = self._connection()
                with watch(what, self.ctx.stop, self.ctx.timeout_s, cut=ftp.cut,
                           stalled=lambda msg: FtpTransientError(msg, uri=uri)) as transfer:
                    ftp.transfer = transfer
                    try:
                        return op(ftp)
                    finally:
                        ftp.transfer = None
            except TransferStopped:
                self._drop(polite=False)
                raise
            except FileTooLarge:
                self._drop(polite=False)  # abandoned mid-transfer: the session is out of step
                raise
            except FtpSourceError as err:
                if isinstance(err, Transient):
                    self._drop(polite=False)
                raise
            except (ftplib.Error, OSError, EOFError) as exc:
                err = self._translate(exc, uri)
                if isinstance(err, Transient):
                    self._drop(polite=False)
                raise err from exc

        return self.ctx.retry.call(attempt, what=what)

    def _connection(self) -> _Ftp:
        """The open connection, or a new one: connected, logged in, passive, binary."""
        if self._ftp is not None:
            return self._ftp
        timeout = self.ctx.timeout_s
        ftp: _Ftp
        if self.source["tls"]:
            context = ssl.create_default_context(cafile=self.source["ca_file"])
            if not self.source["verify_tls"]:
                log.warning("tls_verification_disabled", host=self._host, port=self._port)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            ftp = _FtpTls(context=context, timeout=timeout)
        else:
            ftp = _Ftp(timeout=timeout)
        try:
            # A server that drips its banner or replies is cut like any slow transfer.
            with watch(f"ftp connect {self._base_uri}", self.ctx.stop, timeout, cut=ftp.cut,
                       stalled=lambda msg: FtpTransientError(msg, uri=self._base_uri)) as transfer:
                ftp.transfer = transfer
                ftp.connect(self._host, self._port, timeout=timeout)
                ftp.tolerant_replies()
                if isinstance(ftp, ftplib.FTP_TLS):
                    ftp.auth()
                    ftp.tolerant_replies()
                ftp.login(self.source["user"], reveal(self.source["password"]))
                if isinstance(ftp, ftplib.FTP_TLS):
                    ftp.prot_p()
                ftp.set_pasv(self.source["passive"])
                if self._use_mlsd:
                    _ask_for_unique(ftp)
                ftp.voidcmd("TYPE I")
                if self._root is None:
                    self._root = self._resolve_root(ftp)
            ftp.transfer = None
        except BaseException:
            _close_quietly(ftp, polite=False)
            raise
        log.debug("ftp_connected", host=self._host, port=self._port, tls=self.source["tls"])
        self._ftp = ftp
        return ftp

    def _resolve_root(self, ftp: ftplib.FTP) -> str:
        path = self.source["path"]
        if not path.startswith("/"):
            path = posixpath.join(ftp.pwd(), path)
        path = posixpath.normpath(path)
        return "/" + path.lstrip("/")

    def _drop(self, polite: bool) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            _close_quietly(ftp, polite)

    def _uri(self, remote: str) -> str:
        return f"{self._base_uri}{remote}"

    def _translate(self, exc: BaseException, uri: str) -> FtpSourceError:
        """The most specific FtpSourceError for a library error; the server's words kept, secrets not."""
        reply = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:200]
        if isinstance(exc, ftplib.error_perm):
            code = reply[:3]
            if code == "530":
                return FtpAuthError(f"{self._base_uri}: login refused for user {self.source['user']!r}: {reply}",
                                    uri=self._base_uri, user=self.source["user"], code=code)
            if code == "550":
                return FtpSourceError(f"{uri}: not found or not accessible: {reply}", uri=uri, code=code)
            return FtpSourceError(f"{uri}: refused: {reply}", uri=uri, code=code)
        if isinstance(exc, ftplib.error_temp):
            return FtpTransientError(f"{uri}: temporary failure: {reply}", uri=uri, code=reply[:3])
        if isinstance(exc, ssl.SSLCertVerificationError):
            hint = "set ca_file to the CA that signed it" if self.source["ca_file"] is None else "check ca_file"
            return FtpSourceError(f"{self._base_uri}: TLS certificate not trusted ({exc.verify_message}); {hint}",
                                  uri=self._base_uri)
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError,
                                                                   ssl.SSLSyscallError)):
            return FtpSourceError(f"{self._base_uri}: TLS failure: {reply}", uri=self._base_uri)
        if isinstance(exc, socket.gaierror):
            return FtpSourceError(f"{self._base_uri}: cannot resolve host: {reply}", uri=self._base_uri)
        # error_reply/error_proto (a desynchronised session), resets, timeouts, EOF.
        return FtpTransientError(f"{uri}: connection failed: {type(exc).__name__}: {reply}", uri=uri)


def _ask_for_unique(ftp: ftplib.FTP) -> None:
    """Ask MLSD/MLST for the ``unique`` fact too (pyftpdlib, for one, leaves it out unless asked),
    which the walk's loop guard needs. A server that does not know OPTS MLST keeps its default."""
    try:
        ftp.sendcmd("OPTS MLST type;size;modify;unique;")
    except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply):
        pass


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


def _unchanged_since_listing(ftp: ftplib.FTP, entry: _Entry) -> bool:
    """Whether the file still has the modification time the listing gave (MDTM), so that
    bytes resumed from it continue the same version. True when either side does not say."""
    listed = entry.identity.get("modify")
    if not listed:
        return True
    try:
        now = ftp.sendcmd(f"MDTM {entry.remote}")[3:].strip()
    except ftplib.error_perm:
        return True
    return now[:14] == listed[:14]


def _close_quietly(ftp: ftplib.FTP, polite: bool) -> None:
    """QUIT, then wait for the server to close its side: the session is over for the
    server too when the job's host slot is handed to the next job."""
    if polite:
        try:
            ftp.putcmd("QUIT")
            ftp.getresp()
            if ftp.sock is not None:
                ftp.sock.settimeout(2)
                while ftp.sock.recv(4096):
                    pass
        except Exception:  # noqa: BLE001 - closing must not fail the job
            pass
    try:
        ftp.close()
    except Exception:  # noqa: BLE001
        pass
