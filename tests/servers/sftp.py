"""A real SFTP server for tests: paramiko's server side, serving a folder on 127.0.0.1, port 0.

SSH is spoken for real (key exchange, the server's host key, password and public key login,
the SFTP subsystem), so the client under test runs exactly as it would against OpenSSH. The
server counts what the tests assert on: sessions open at once (``peak_sessions``), files
opened and the offset of each open's first read (``opens``), bytes served per file
(``bytes_served``). Faults on request: drop the connection at the first read at or past offset
``drop_after_bytes`` of a file (the first ``drops`` times), and ``read_delay_s`` per read so
downloads overlap.

    with SftpServer(root, password="...") as srv:
        srv.host, srv.port, srv.user, srv.fingerprint, srv.known_hosts_line()
"""

from __future__ import annotations

import hmac
import os
import posixpath
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_OP_UNSUPPORTED, SFTP_PERMISSION_DENIED

__all__ = ["SftpServer", "new_key"]


def new_key() -> paramiko.PKey:
    """A fresh ECDSA key (fast to make): host keys and client keys of the tests."""
    return paramiko.ECDSAKey.generate()


class SftpServer:
    """Serves ``root`` read-only to ``user`` with ``password`` or any of ``authorized_keys``."""

    def __init__(self, root: Path, user: str = "feeder", password: str = "sftp-test-password-41",
                 authorized_keys: Sequence[paramiko.PKey] = (), host_key: paramiko.PKey | None = None,
                 drop_after_bytes: int | None = None, drops: int = 1, read_delay_s: float = 0.0) -> None:
        self.root = root.resolve()
        self.user = user
        self.password = password
        self.authorized_keys = list(authorized_keys)
        self.host_key = host_key or new_key()
        self.drop_after_bytes = drop_after_bytes
        self.drops_left = drops
        self.read_delay_s = read_delay_s
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()
        self.sessions = 0
        """SFTP sessions open now."""
        self.peak_sessions = 0
        """The most SFTP sessions open at once."""
        self.logins = 0
        self.refused_logins = 0
        self.opens: list[tuple[str, int | None]] = []
        """Each open of a file: its path and the offset of its first read (None: never read)."""
        self.handles: list[_File] = []
        """Each open of a file, with what it served (``served``, ``min_offset``, ``dropped``)."""
        self.bytes_served: defaultdict[str, int] = defaultdict(int)
        self.drops_done = 0
        self._listener: socket.socket | None = None
        self._transports: list[paramiko.Transport] = []
        self._threads: list[threading.Thread] = []

    # -- what tests read -----------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The host key's ``SHA256:...`` fingerprint, as ``ssh-keygen -lf`` prints it."""
        return str(self.host_key.fingerprint)

    def known_hosts_line(self, key: paramiko.PKey | None = None) -> str:
        """A known_hosts line for this server (with ``key`` instead of its own, to fake a mismatch)."""
        key = key or self.host_key
        return f"[{self.host}]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def reads_of(self, name: str) -> list[tuple[int | None, int]]:
        """Per open of ``name``: the lowest offset read and the bytes served."""
        with self._lock:
            return [(h.min_offset, h.served) for h in self.handles if h.path == "/" + name]

    def opens_of(self, name: str) -> list[int | None]:
        """First-read offsets of each open of ``name`` (relative to root)."""
        with self._lock:
            return [offset for path, offset in self.opens if path == "/" + name]

    def drop_connections(self) -> None:
        """Close every connection now (clients find their idle sessions dead)."""
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()

    @staticmethod
    def _hang_up(transport: paramiko.Transport) -> None:
        """End the connection mid-file the clean way (a FIN after the last byte sent), so that the
        client gets every byte served before it: closing a socket with requests still unread
        would send an RST, and the client's kernel may drop data it had not read yet. The
        transport goes on reading (no RST) until the client, seeing the end, closes its side."""
        sock = transport.sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        transport.join(30)
        transport.close()

    # -- life ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        listener = socket.create_server((self.host, 0))
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, name="sftp-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.close()
        self.drop_connections()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="sftp-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Folder)
        with self._lock:
            self._transports.append(transport)
        try:
            transport.start_server(server=_Login(self, transport))
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()  # the client hung up (e.g. it refused our host key)

    # -- called by the session handlers ------------------------------------------------

    def session_started(self) -> None:
        with self._lock:
            self.sessions += 1
            self.peak_sessions = max(self.peak_sessions, self.sessions)

    def session_ended(self) -> None:
        with self._lock:
            self.sessions -= 1

    def served(self, handle: _File, offset: int, length: int) -> bytes | int:
        """One read: the bytes, or an SFTP status after dropping the connection on purpose."""
        if self.read_delay_s:
            time.sleep(self.read_delay_s)
        with self._lock:
            if handle.dropped:  # requests already buffered when the connection was dropped: never answered
                return SFTP_FAILURE
            if handle.first_offset is None:
                handle.first_offset = offset
                self.opens[handle.index] = (handle.path, offset)
            handle.min_offset = offset if handle.min_offset is None else min(handle.min_offset, offset)
            drop = self.drop_after_bytes is not None and self.drops_left > 0 and offset >= self.drop_after_bytes
            if drop:
                handle.dropped = True
                self.drops_left -= 1
                self.drops_done += 1
        if drop:
            self._hang_up(handle.transport)
            return SFTP_FAILURE
        handle.readfile.seek(offset)
        data: bytes = handle.readfile.read(length)
        with self._lock:
            handle.served += len(data)
            self.bytes_served[handle.path] += len(data)
        return data


class _Login(paramiko.ServerInterface):
    def __init__(self, server: SftpServer, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        ok = username == self.server.user and hmac.compare_digest(password.encode(), self.server.password.encode())
        return self._verdict(ok)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == self.server.user and any(k.asbytes() == key.asbytes() for k in self.server.authorized_keys)
        return self._verdict(ok)

    def _verdict(self, ok: bool) -> int:
        with self.server._lock:
            if ok:
                self.server.logins += 1
            else:
                self.server.refused_logins += 1
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _File(paramiko.SFTPHandle):
    def __init__(self, server: SftpServer, transport: paramiko.Transport, path: str, index: int) -> None:
        super().__init__()
        self.server = server
        self.transport = transport
        self.path = path
        self.index = index
        self.served = 0
        self.first_offset: int | None = None
        self.min_offset: int | None = None
        self.dropped = False

    def read(self, offset: int, length: int) -> bytes | int:
        return self.server.served(self, offset, length)

    def stat(self) -> paramiko.SFTPAttributes | int:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))


def _clean(path: str) -> str:
    """``path`` as an absolute, normal remote path (``/`` rooted; no ``//`` prefix)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _status(exc: OSError) -> int:
    return paramiko.SFTPServer.convert_errno(exc.errno)  # type: ignore[no-any-return]


class _Folder(paramiko.SFTPServerInterface):
    """The SFTP side: paths are ``/``-rooted at the server's root; read-only."""

    def __init__(self, login: _Login, *args: Any, **kwargs: Any) -> None:
        super().__init__(login, *args, **kwargs)
        self.server = login.server
        self.transport = login.transport

    def session_started(self) -> None:
        self.server.session_started()

    def session_ended(self) -> None:
        self.server.session_ended()

    def _local(self, path: str) -> Path:
        clean = _clean(path).lstrip("/")
        return self.server.root / clean

    def _remote(self, local: str) -> str:
        rel = os.path.relpath(local, self.server.root)
        return "/" if rel == "." else "/" + rel.replace(os.sep, "/")

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        local = self._local(path)
        try:
            out = []
            for name in os.listdir(local):
                attrs = paramiko.SFTPAttributes.from_stat(os.lstat(local / name))
                attrs.filename = name
                out.append(attrs)
            return out
        except OSError as exc:
            return _status(exc)

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._local(path)))
        except OSError as exc:
            return _status(exc)

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.lstat(self._local(path)))
        except OSError as exc:
            return _status(exc)

    def canonicalize(self, path: str) -> str:
        real = os.path.realpath(self._local(path))
        if real != str(self.server.root) and not real.startswith(str(self.server.root) + os.sep):
            return _clean(path)
        return self._remote(real)

    def readlink(self, path: str) -> str | int:
        try:
            return self._remote(os.path.realpath(self._local(path)))
        except OSError as exc:
            return _status(exc)

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle | int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
            return SFTP_PERMISSION_DENIED
        local = self._local(path)
        if local.is_dir():
            return SFTP_FAILURE
        try:
            fh = open(local, "rb")  # noqa: SIM115 - the handle closes it
        except OSError as exc:
            return _status(exc)
        clean = _clean(path)
        with self.server._lock:
            self.server.opens.append((clean, None))
            index = len(self.server.opens) - 1
        handle = _File(self.server, self.transport, clean, index)
        with self.server._lock:
            self.server.handles.append(handle)
        handle.readfile = fh
        handle.filename = str(local)
        return handle

    def remove(self, path: str) -> int:
        return SFTP_OP_UNSUPPORTED

    def rename(self, oldpath: str, newpath: str) -> int:
        return SFTP_OP_UNSUPPORTED

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return SFTP_OP_UNSUPPORTED

    def rmdir(self, path: str) -> int:
        return SFTP_OP_UNSUPPORTED

