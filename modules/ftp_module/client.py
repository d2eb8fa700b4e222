"""The FTP side of the ``ftp`` module: sessions (plain and explicit FTPS), login, error translation.

A :class:`FtpSession` is one logged-in control connection: passive or active as configured,
binary, asked for MLSD's ``unique`` fact, its login folder remembered (``home``). Sessions
live in the run's pool (``ctx.resources.pooled``) under their :class:`Login` (host, port,
user, password as a :class:`~module_system.Secret`, TLS settings, passive, timeout): one
listing call or one download checks a session out and gives it back, so sessions are reused
across files and jobs of a run and parallel downloads each have their own. A session the
block raised through is closed by the pool (hard: it may be out of step); one closed at the
end of the run says ``QUIT`` first.
"""

from __future__ import annotations

import contextlib
import ftplib
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from module_system import Secret, Transfer, redact, shut_socket, watch
from modules.ftp_module.exceptions import (
    FtpAuthError,
    FtpSourceError,
    FtpTransientError,
)

__all__ = ["FtpSession", "FtpTlsSession", "Login", "dropped_while_idle", "netloc", "open_session", "translate"]

log = structlog.get_logger(__name__)

#: Seconds a polite close waits for the server's reply to QUIT and its end of the connection.
QUIT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Login:
    """What makes two sessions interchangeable: the pool key (the password is a Secret, so the
    key never prints it)."""

    host: str
    port: int
    user: str
    password: Secret
    tls: bool
    ca_file: str | None
    verify_tls: bool
    passive: bool
    timeout_s: float

    @classmethod
    def of(cls, source: Mapping[str, Any], timeout_s: float) -> Login:
        password = source["password"]
        return cls(source["host"], int(source["port"]), source["user"],
                   password if isinstance(password, Secret) else Secret(str(password)),
                   bool(source["tls"]), source["ca_file"], bool(source["verify_tls"]), bool(source["passive"]),
                   float(timeout_s))

    @property
    def base_uri(self) -> str:
        """``ftp://host:port``, without credentials."""
        return f"ftp://{netloc(self.host)}:{self.port}"


def netloc(host: str) -> str:
    """``host`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


class FtpSession(ftplib.FTP):
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
    """The watched transfer the bytes of data connections count towards (set per use)."""
    home: str = "/"
    """The login folder (PWD right after login): relative ``path`` values start there."""
    broken: bool = False
    """Set when a use raised: :meth:`close` then drops the connection without a word."""
    good_replies: int = 0
    """Replies that were not errors, so far: a reused session that fails before its next one
    was dead before it was checked out (the server dropped it while idle)."""
    uses: int = 0
    """Check-outs so far."""

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

    def getresp(self) -> str:
        reply = super().getresp()  # raises on 4xx/5xx
        self.good_replies += 1
        return reply

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
        callback = callback or print
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

    def close(self) -> None:
        """Say QUIT and wait (briefly) for the server to close its side, unless a use raised;
        then close. Never raises. The run's pool calls it."""
        sock = self.sock
        if sock is not None and not self.broken:
            self.broken = True
            with contextlib.suppress(Exception):  # closing must not fail anything
                sock.settimeout(QUIT_TIMEOUT_S)
                self.putcmd("QUIT")
                self.getresp()
                while sock.recv(4096):
                    pass
        with contextlib.suppress(Exception):
            super().close()


class FtpTlsSession(FtpSession, ftplib.FTP_TLS):
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


def open_session(login: Login, stop: Any) -> FtpSession:
    """A new session: connected, logged in, PROT P with TLS, passive as configured, asked for
    the ``unique`` fact, binary, its login folder read. Raises ftplib/socket errors (see
    :func:`translate`) or the watchdog's error when the server drips its banner or replies."""
    ftp: FtpSession
    if login.tls:
        context = ssl.create_default_context(cafile=login.ca_file)
        if not login.verify_tls:
            log.warning("tls_verification_disabled", host=login.host, port=login.port)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        ftp = FtpTlsSession(context=context, timeout=login.timeout_s)
    else:
        ftp = FtpSession(timeout=login.timeout_s)
    try:
        with watch(f"ftp connect {login.base_uri}", stop, login.timeout_s, cut=ftp.cut,
                   stalled=lambda msg: FtpTransientError(msg, uri=login.base_uri)) as transfer:
            ftp.transfer = transfer
            ftp.connect(login.host, login.port, timeout=login.timeout_s)
            ftp.tolerant_replies()
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
                ftp.tolerant_replies()
            ftp.login(login.user, login.password.reveal())
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(login.passive)
            _ask_for_unique(ftp)
            ftp.voidcmd("TYPE I")
            ftp.home = ftp.pwd()
        ftp.transfer = None
    except BaseException:
        ftp.broken = True
        ftp.close()
        raise
    log.debug("ftp_connected", host=login.host, port=login.port, tls=login.tls)
    return ftp


def _ask_for_unique(ftp: ftplib.FTP) -> None:
    """Ask MLSD/MLST for the ``unique`` fact too (pyftpdlib, for one, leaves it out unless asked),
    which the walk's loop guard needs. A server that does not know OPTS MLST keeps its default."""
    try:
        ftp.sendcmd("OPTS MLST type;size;modify;unique;")
    except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply):
        pass


def translate(exc: BaseException, uri: str, login: Login) -> FtpSourceError:
    """The most specific FtpSourceError for a library error; the server's words kept, secrets not."""
    base = login.base_uri
    reply = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:200]
    if isinstance(exc, ftplib.error_perm):
        code = reply[:3]
        if code == "530":
            return FtpAuthError(f"{base}: login refused for user {login.user!r}: {reply}",
                                uri=base, user=login.user, code=code)
        if code == "550":
            return FtpSourceError(f"{uri}: not found or not accessible: {reply}", uri=uri, code=code)
        return FtpSourceError(f"{uri}: refused: {reply}", uri=uri, code=code)
    if isinstance(exc, ftplib.error_temp):
        return FtpTransientError(f"{uri}: temporary failure: {reply}", uri=uri, code=reply[:3])
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = "set ca_file to the CA that signed it" if login.ca_file is None else "check ca_file"
        return FtpSourceError(f"{base}: TLS certificate not trusted ({exc.verify_message}); {hint}", uri=base)
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError,
                                                               ssl.SSLSyscallError)):
        return FtpSourceError(f"{base}: TLS failure: {reply}", uri=base)
    if isinstance(exc, socket.gaierror):
        return FtpSourceError(f"{base}: cannot resolve host: {reply}", uri=base)
    # error_reply/error_proto (a desynchronised session), resets, timeouts, EOF.
    return FtpTransientError(f"{uri}: connection failed: {type(exc).__name__}: {reply}", uri=uri)


def dropped_while_idle(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a reused session before any good reply, says the server had
    closed it (reset, EOF, ``421`` service closing) rather than that it is slow or refusing."""
    if isinstance(exc, TimeoutError):
        return False
    if isinstance(exc, ftplib.error_temp):
        return str(exc)[:3] == "421"
    return isinstance(exc, (EOFError, OSError))
