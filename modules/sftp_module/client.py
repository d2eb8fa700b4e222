"""The SSH side of the ``sftp`` module: sessions, host key checking, login, error translation.

A :class:`SftpSession` is one SSH connection (a paramiko ``Transport``) with one SFTP channel
open on it, its login folder remembered (``home``). Sessions live in the run's pool
(``ctx.resources.pooled``) under their :class:`Login` (host, port, user, password and key as
:class:`~module_system.Secret`, host key settings, timeout): one listing call or one download
checks a session out and gives it back, so sessions are reused across files and jobs of a run
and parallel downloads each have their own.

**Host keys** are checked before any credential is sent (:func:`check_host_key`):

* with ``host_key_fingerprint`` (``SHA256:...`` as ``ssh-keygen -lf`` prints it) the server's
  key must have that fingerprint;
* otherwise it must be the key ``known_hosts`` (OpenSSH format, hashed names too) holds for
  ``host`` (``[host]:port`` when the port is not 22); the key types that file holds for the
  host are asked for first, so a server with several host keys shows the one on record.
  ``@revoked`` keys are refused; ``@cert-authority`` lines and lines that cannot be read are
  left out (:func:`known_keys`);
* ``insecure_skip_host_key_check: true`` accepts any key, with a ``sftp_host_key_not_checked``
  warning on every connection.

An unknown or different key is :class:`SftpHostKeyError` (the source fails at once, no retry).

**Login**: the private key first (``private_key`` text or ``private_key_path``, with
``private_key_passphrase`` when it is encrypted), then the password; a server asking for both
(partial success) gets both. Refused: :class:`SftpAuthError`.
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import io
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from module_system import Secret, Transfer, redact, shut_socket, watch
from modules.sftp_module.exceptions import (
    SftpAuthError,
    SftpHostKeyError,
    SftpSourceError,
    SftpTransientError,
)

__all__ = ["KnownHosts", "Login", "SftpSession", "check_host_key", "known_keys", "load_private_key", "netloc",
           "open_session", "translate"]

log = structlog.get_logger(__name__)

#: Server key algorithms to ask for when known_hosts holds a key of the type on the left.
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


@dataclass(frozen=True)
class Login:
    """What makes two sessions interchangeable: the pool key (secrets are Secrets, so the key
    never prints them)."""

    host: str
    port: int
    user: str
    password: Secret
    private_key: Secret
    """Key text (PEM or OpenSSH); empty when none."""
    private_key_path: str | None
    passphrase: Secret
    known_hosts: str
    fingerprint: str | None
    """The pinned ``SHA256:...`` fingerprint, without base64 padding."""
    insecure: bool
    timeout_s: float

    @classmethod
    def of(cls, source: Mapping[str, Any], timeout_s: float) -> Login:
        pin = source.get("host_key_fingerprint")
        return cls(source["host"], int(source["port"]), source["user"], _secret(source.get("password")),
                   _secret(source.get("private_key")), source.get("private_key_path"),
                   _secret(source.get("private_key_passphrase")), source["known_hosts"],
                   pin.rstrip("=") if pin else None, bool(source["insecure_skip_host_key_check"]),
                   float(timeout_s))

    @property
    def base_uri(self) -> str:
        """``sftp://host:port``, without credentials."""
        return f"sftp://{netloc(self.host)}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this server: ``host``, or ``[host]:port`` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def has_key(self) -> bool:
        return bool(self.private_key) or bool(self.private_key_path)


def _secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret("" if value is None else str(value))


def netloc(host: str) -> str:
    """``host`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


class SftpSession:
    """One SSH connection and its SFTP channel; the run's pool closes it."""

    def __init__(self, sock: socket.socket, transport: paramiko.Transport, sftp: paramiko.SFTPClient,
                 home: str) -> None:
        self.sock = sock
        self.transport = transport
        self.sftp = sftp
        self.home = home
        """The login folder: a relative ``path`` starts there."""
        self.transfer: Transfer | None = None
        """The watched transfer of the use in progress (set per use)."""
        self.uses = 0
        self.progress = 0
        """Replies and bytes seen so far (a reused session failing before any was dead already)."""

    @property
    def alive(self) -> bool:
        """False once the server (or a cut) closed the connection: the session is not reused."""
        return bool(self.transport.is_active())

    def saw(self, n: int = 0) -> None:
        """A reply (``n`` bytes of file data) came in: tell the watchdog."""
        self.progress += 1
        if self.transfer is not None:
            if n:
                self.transfer.arrived(n)
            else:
                self.transfer.answered()

    def cut(self) -> None:
        """Shut the socket (from the watchdog thread): the blocked read returns with an error."""
        shut_socket(self.sock)

    def close(self) -> None:
        """Close the channel and the connection. Never raises; the run's pool calls it."""
        with contextlib.suppress(Exception):
            self.sftp.close()
        with contextlib.suppress(Exception):
            self.transport.close()
        with contextlib.suppress(Exception):
            self.sock.close()


def open_session(login: Login, stop: Any) -> SftpSession:
    """A new session: connected, host key checked, logged in, SFTP channel open, login folder read.

    Raises SftpHostKeyError, SftpAuthError, or socket/paramiko errors (see :func:`translate`);
    the watchdog's error when the server stalls, TransferStopped when the run stops."""
    expected = None if login.insecure or login.fingerprint else known_keys(login)
    sock = socket.create_connection((login.host, login.port), timeout=login.timeout_s)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = login.timeout_s
        if expected is not None and expected.keys:
            _prefer(transport, expected.keys.keys())
        with watch(f"sftp connect {login.base_uri}", stop, login.timeout_s, cut=lambda: shut_socket(sock),
                   stalled=lambda msg: SftpTransientError(msg, uri=login.base_uri)) as transfer:
            transport.start_client(timeout=login.timeout_s)
            transfer.answered()
            check_host_key(login, transport.get_remote_server_key(), expected)
            authenticate(transport, login)
            transfer.answered()
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise SftpTransientError(f"{login.base_uri}: the server opened no SFTP channel", uri=login.base_uri)
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(login.timeout_s)
            home = sftp.normalize(".")
    except BaseException:
        transport.close()
        sock.close()
        raise
    log.debug("sftp_connected", host=login.host, port=login.port, user=login.user)
    return SftpSession(sock, transport, sftp, home)


@dataclass(frozen=True)
class KnownHosts:
    """What ``known_hosts`` says of the server: its keys by type, and the keys marked ``@revoked``."""

    keys: Mapping[str, paramiko.PKey]
    revoked: tuple[paramiko.PKey, ...] = ()


def known_keys(login: Login) -> KnownHosts:
    """The keys ``known_hosts`` holds for the server (none when there is no file).

    Read line by line as OpenSSH does: hashed names match, a line that cannot be read is left
    out (logged at debug) instead of failing the whole file, ``@cert-authority`` lines are left
    out (host certificates are not used here) and ``@revoked`` keys are refused for any host."""
    path = os.path.expanduser(login.known_hosts)
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return KnownHosts({})
    except OSError as exc:
        raise SftpHostKeyError(f"{login.base_uri}: cannot read known_hosts {path}: "
                               f"{exc.strerror or type(exc).__name__}", uri=login.base_uri) from exc
    keys = paramiko.HostKeys()
    revoked = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            if marker != "@revoked":
                continue
        try:
            entry = HostKeyEntry.from_line(line.strip(), number)
        except (InvalidHostKey, paramiko.SSHException, ValueError) as exc:
            log.debug("known_hosts_line_skipped", path=path, line=number, error=type(exc).__name__)
            continue
        if entry is None or entry.key is None:
            continue
        if marker:
            revoked.append(entry.key)
            continue
        for name in entry.hostnames:
            if name.startswith("|1|") and not _hash_readable(name):
                log.debug("known_hosts_line_skipped", path=path, line=number, error="bad hashed name")
                continue
            keys.add(name, entry.key.get_name(), entry.key)
    found = keys.lookup(login.known_hosts_name)
    return KnownHosts({name: found[name] for name in found} if found is not None else {}, tuple(revoked))


def _hash_readable(name: str) -> bool:
    """Whether a hashed known_hosts name (``|1|salt|hash``) has a salt paramiko can use."""
    try:
        paramiko.HostKeys.hash_host("probe", name)
    except (AssertionError, ValueError, binascii.Error, IndexError):
        return False
    return True


def _prefer(transport: paramiko.Transport, types: Any) -> None:
    """Ask the server for the key types known_hosts holds for it first."""
    options = transport.get_security_options()
    wanted = [alg for t in types for alg in _ALGORITHMS.get(t, (t,)) if alg in options.key_types]
    if wanted:
        options.key_types = tuple(wanted) + tuple(t for t in options.key_types if t not in wanted)


def check_host_key(login: Login, key: paramiko.PKey, expected: KnownHosts | None) -> None:
    """Raise SftpHostKeyError unless the server's ``key`` is the one configured (see the module
    docstring); ``expected`` is :func:`known_keys` (None with a pin or when checking is off)."""
    got = key.fingerprint
    base = login.base_uri
    if login.insecure:
        log.warning("sftp_host_key_not_checked", host=login.host, port=login.port, key_type=key.get_name(),
                    fingerprint=got)
        return
    if login.fingerprint:
        if got == login.fingerprint:
            return
        raise SftpHostKeyError(f"{base}: host key mismatch: the server's {key.get_name()} key is {got}, "
                               f"host_key_fingerprint is {login.fingerprint}; the server may not be the one "
                               "configured", uri=base, fingerprint=got)
    known_hosts = os.path.expanduser(login.known_hosts)
    expected = expected or KnownHosts({})
    if any(k.asbytes() == key.asbytes() for k in expected.revoked):
        raise SftpHostKeyError(f"{base}: the server's {key.get_name()} key {got} is marked @revoked in known_hosts "
                               f"{known_hosts}", uri=base, fingerprint=got)
    if not expected.keys:
        where = known_hosts if Path(known_hosts).exists() else f"{known_hosts} (no such file)"
        raise SftpHostKeyError(f"{base}: unknown host key: {login.known_hosts_name} is not in known_hosts "
                               f"{where}; the server's {key.get_name()} key is {got}: after checking it with "
                               "the server's owner, add it to known_hosts (ssh-keyscan) or set "
                               "host_key_fingerprint", uri=base, fingerprint=got)
    on_record = expected.keys.get(key.get_name())
    if on_record is not None and on_record.asbytes() == key.asbytes():
        return
    held = ", ".join(f"{k.get_name()} {k.fingerprint}" for k in expected.keys.values())
    raise SftpHostKeyError(f"{base}: host key mismatch: the server's {key.get_name()} key is {got}, known_hosts "
                           f"{known_hosts} holds {held} for {login.known_hosts_name}; the server may not be the "
                           "one configured", uri=base, fingerprint=got)


def authenticate(transport: paramiko.Transport, login: Login) -> None:
    """Key first, then password (both when the server asks for both); SftpAuthError when refused."""
    tried = []
    if login.has_key:
        pkey = load_private_key(login)
        tried.append(f"{pkey.get_name()} key {pkey.fingerprint}")
        with contextlib.suppress(paramiko.AuthenticationException):
            transport.auth_publickey(login.user, pkey)
    if not transport.is_authenticated() and login.password:
        tried.append("password")
        with contextlib.suppress(paramiko.AuthenticationException):
            transport.auth_password(login.user, login.password.reveal())
    if not tried:
        tried.append("no credentials (set password, private_key or private_key_path)")
        with contextlib.suppress(paramiko.AuthenticationException):
            transport.auth_none(login.user)
    if not transport.is_authenticated():
        raise SftpAuthError(f"{login.base_uri}: login refused for user {login.user!r} (tried {', '.join(tried)})",
                            uri=login.base_uri, user=login.user)


def load_private_key(login: Login) -> paramiko.PKey:
    """The private key of ``private_key`` (text) or ``private_key_path``, decrypted with the
    passphrase; SftpAuthError naming what is wrong (never quoting the key)."""
    base = login.base_uri
    if login.private_key:
        text, what = login.private_key.reveal(), "private_key"
    else:
        assert login.private_key_path is not None
        path = os.path.expanduser(login.private_key_path)
        what = f"private_key_path {path}"
        try:
            text = Path(path).read_text(errors="replace")
        except OSError as exc:
            raise SftpAuthError(f"{base}: cannot read {what}: {exc.strerror or type(exc).__name__}",
                                uri=base, user=login.user) from None
    passphrase = login.passphrase.reveal() or None
    data = text.strip().encode() + b"\n"
    try:
        try:
            loaded: Any = serialization.load_ssh_private_key(data, password=passphrase.encode() if passphrase else None)
        except ValueError as exc:
            if "not openssh private key format" not in str(exc).lower():
                raise
            loaded = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError as exc:  # encrypted and no passphrase, or a passphrase for a plain key
        said = str(exc).lower()
        hint = ("it is encrypted: set private_key_passphrase" if "not provided" in said or "not given" in said
                else "private_key_passphrase is set but the key is not encrypted" if "not encrypted" in said
                else f"{type(exc).__name__}")
        raise SftpAuthError(f"{base}: cannot load {what}: {hint}", uri=base, user=login.user) from None
    except (ValueError, paramiko.SSHException) as exc:
        reason = "wrong private_key_passphrase or not a private key" if passphrase else "not a private key"
        raise SftpAuthError(f"{base}: cannot load {what}: {reason} ({type(exc).__name__})",
                            uri=base, user=login.user) from None
    key_class: type[paramiko.PKey]
    if isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    else:
        raise SftpAuthError(f"{base}: cannot use {what}: {type(loaded).__name__} keys are not supported "
                            "(use ed25519, ecdsa or rsa)", uri=base, user=login.user)
    try:
        return key_class.from_private_key(io.StringIO(data.decode()), password=passphrase)
    except (paramiko.SSHException, ValueError) as exc:
        raise SftpAuthError(f"{base}: cannot load {what}: {type(exc).__name__}", uri=base, user=login.user) from None


def translate(exc: BaseException, uri: str, login: Login) -> SftpSourceError:
    """The most specific SftpSourceError for a library error; the server's words kept, secrets not."""
    if isinstance(exc, SftpSourceError):
        return exc
    base = login.base_uri
    text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:200]
    if isinstance(exc, paramiko.AuthenticationException):
        return SftpAuthError(f"{base}: login refused for user {login.user!r}: {text}", uri=base, user=login.user)
    if isinstance(exc, socket.gaierror):
        return SftpSourceError(f"{base}: cannot resolve host: {text}", uri=base)
    code = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and code == errno.ENOENT:
        return SftpSourceError(f"{uri}: no such file or folder", uri=uri)
    if isinstance(exc, OSError) and code == errno.EACCES:
        return SftpSourceError(f"{uri}: permission denied", uri=uri)
    if type(exc) in (OSError, IOError) and code is None and exc.args and isinstance(exc.args[0], str):
        return SftpSourceError(f"{uri}: refused: {text}", uri=uri)  # an SFTP status the server chose to send
    # resets, timeouts, EOF, the connection dropped mid-transfer, SSH protocol errors
    return SftpTransientError(f"{uri}: connection failed: {type(exc).__name__}: {text}", uri=uri)
