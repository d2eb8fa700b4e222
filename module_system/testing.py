"""Embedded local servers for tests, the demo and plugin authors.

From a shell, ``python -m module_system.testing s3 [--bucket NAME] [--port N]`` starts an
embedded S3 (moto) on 127.0.0.1, creates the bucket and prints the environment to export
(endpoint, dummy credentials, bucket); it serves until Ctrl-C. A registry then lands in it
with ``destination: {bucket: ${S3_BUCKET}, endpoint_url: ${S3_URL}}`` (boto3 also reads
``AWS_ENDPOINT_URL`` by itself).

Everything binds 127.0.0.1 on port 0 and is ready when the constructor returns (the
socket is bound and listening); nothing sleeps. Needs the ``test`` extra
(``moto[server]``, ``pyftpdlib``, ``pyopenssl`` for FTPS).

    with S3Server() as s3, FtpServer(root) as ftp:
        boto3.client("s3", endpoint_url=s3.url, ...)
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import ipaddress
import logging
import os
import posixpath
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import click

__all__ = ["FtpServer", "HttpRequest", "HttpServer", "S3Server", "main", "make_self_signed_cert", "s3_client",
           "s3_environment"]

# The servers' own request logs are noise in test and demo output.
logging.getLogger("werkzeug").setLevel(logging.ERROR)
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
# pyftpdlib installs its own INFO handler unless its logger already has one.
logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())

#: Credentials moto accepts; any non-empty values work.
TEST_AWS_KEY = "testing"
TEST_AWS_SECRET = "testing"


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1, a random port."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def client(self) -> Any:
        return s3_client(self.url)

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API)."""
        import requests

        requests.post(f"{self.url}/moto-api/reset", timeout=10)

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def s3_client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        aws_access_key_id=TEST_AWS_KEY, aws_secret_access_key=TEST_AWS_SECRET,
    )


class FtpServer:
    """pyftpdlib serving ``root`` to one user, in a thread; explicit FTPS with ``tls_cert``.

    ``tls_cert`` is a PEM file holding the certificate and its key (see
    :func:`make_self_signed_cert`). ``max_cons`` caps simultaneous sessions.
    ``sessions`` counts the sessions open now and ``peak_sessions`` the most at once.

    Faults, deterministic so that tests can count them:

    ``drop_after_bytes``
        The data connection of a download is cut after sending this many bytes (the
        server closes it and replies ``426``; with ``drop_with_reset`` it sends a TCP RST
        instead of a FIN). Only the first ``drop_transfers`` RETRs of each file whose
        base name matches the glob ``drop_match`` are cut, and only when more than
        ``drop_after_bytes`` bytes remain to send from the REST offset.
    ``rest_supported``
        When False, REST is answered ``502`` and FEAT does not list ``REST STREAM``.

    The witness: ``retrs`` lists each RETR as ``(path relative to root, REST offset)``
    and ``faults_injected`` counts the transfers actually cut.

    ``hold_retrs``
        The first ``hold_retrs`` RETRs wait for each other (up to 30 s) before sending
        anything: they can only all proceed when a client runs that many downloads at once,
        on as many sessions. ``held_together`` then says whether they met (False: the wait
        timed out and they went on one by one).
    """

    def __init__(self, root: str | Path, user: str = "user", password: str = "ftp-pw-8c2e4f91",
                 tls_cert: str | Path | None = None, max_cons: int = 256, use_mlsd: bool = True,
                 drop_after_bytes: int | None = None, drop_transfers: int = 1, drop_match: str = "*",
                 drop_with_reset: bool = False, rest_supported: bool = True, hold_retrs: int = 0) -> None:
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
        from pyftpdlib.handlers.ftp.producers import FileProducer
        from pyftpdlib.ioloop import IOLoop
        from pyftpdlib.servers import ThreadedFTPServer

        self.root = Path(root)
        self.user, self.password = user, password
        self.drop_after_bytes, self.drop_transfers, self.drop_match = drop_after_bytes, drop_transfers, drop_match
        self.drop_with_reset, self.rest_supported = drop_with_reset, rest_supported
        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, str(self.root), perm="elradfmwMT")
        base = TLS_FTPHandler if tls_cert else FTPHandler
        owner = self
        self.sessions = 0
        self.peak_sessions = 0
        self.commands: list[str] = []
        self.retrs: list[tuple[str, int]] = []
        self.faults_injected = 0
        self._retrs_per_file: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hold_retrs = hold_retrs
        self.held_together: bool | None = None
        self._holding = 0
        self._held = threading.Barrier(hold_retrs, timeout=30) if hold_retrs else None

        class CuttingDTPHandler(base.dtp_handler):  # type: ignore[misc, name-defined]
            """Sends a download's first ``_cut_at`` bytes, then aborts the data connection."""

            _cut_at: int | None = None

            def push_with_producer(self, producer: Any) -> None:
                if isinstance(producer, FileProducer):  # a RETR (listings use other producers)
                    self._cut_at, self.cmd_channel.cut_at = self.cmd_channel.cut_at, None
                super().push_with_producer(producer)

            def use_sendfile(self) -> bool:
                return self._cut_at is None and bool(super().use_sendfile())

            def send(self, data: bytes) -> int:
                if self._cut_at is None:
                    return int(super().send(data))
                room = self._cut_at - self.tot_bytes_sent
                if room > 0:
                    return int(super().send(data[:room]))
                self._cut_at = None
                with owner._lock:
                    owner.faults_injected += 1
                if owner.drop_with_reset:
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.handle_close()  # data still queued: "426 Transfer aborted", then close
                return 0

        class Handler(base):  # type: ignore[misc, valid-type]
            dtp_handler = CuttingDTPHandler
            cut_at: int | None = None

            def on_connect(self) -> None:
                with owner._lock:
                    owner.sessions += 1
                    owner.peak_sessions = max(owner.peak_sessions, owner.sessions)

            def on_disconnect(self) -> None:
                with owner._lock:
                    owner.sessions -= 1

            def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
                with owner._lock:
                    owner.commands.append(cmd)
                if cmd == "REST" and not owner.rest_supported:
                    self.respond("502 Command not implemented.")
                    return
                super().pre_process_command(line, cmd, arg)

            def ftp_RETR(self, file: str) -> Any:
                owner._hold_retr()
                self.cut_at = owner._plan_retr(file, self._restart_position)
                return super().ftp_RETR(file)

        Handler.authorizer = authorizer
        Handler.banner = "module_system test FTP"
        Handler.passive_ports = None
        hidden = set() if use_mlsd else {"MLSD", "MLST"}
        if not rest_supported:
            hidden.add("REST")  # not advertised in FEAT; pre_process_command answers 502
        if hidden:
            Handler.proto_cmds = {k: v for k, v in base.proto_cmds.items() if k not in hidden}
        if tls_cert:
            Handler.certfile = str(tls_cert)
            Handler.tls_control_required = True
            Handler.tls_data_required = True
        # Each server gets its own IOLoop: pyftpdlib's default is a process-wide singleton,
        # which two servers polled from two threads would share.
        self._server = ThreadedFTPServer(("127.0.0.1", 0), Handler, ioloop=IOLoop())
        # pyftpdlib keeps the stop event and lock on the class: stopping one server would
        # end every other server's sessions. Give this one its own.
        self._server._exit = threading.Event()
        self._server._lock = threading.Lock()
        self._server.max_cons = max_cons
        self.host, self.port = self._server.address[0], self._server.address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"timeout": 0.2},
                                         name="ftp-server", daemon=True)
        self._thread.start()

    def _plan_retr(self, path: str, rest: int) -> int | None:
        """Record a RETR of ``path`` (a local path) at offset ``rest``; the bytes after which
        to cut its data connection, or None to send it whole."""
        name = Path(os.path.relpath(path, self.root)).as_posix()
        with self._lock:
            self.retrs.append((name, rest))
            count = self._retrs_per_file[name] = self._retrs_per_file.get(name, 0) + 1
        limit = self.drop_after_bytes
        if limit is None or count > self.drop_transfers or not fnmatch.fnmatchcase(posixpath.basename(name),
                                                                                    self.drop_match):
            return None
        try:
            left = os.path.getsize(path) - rest
        except OSError:
            return None
        return limit if left > limit else None

    def _hold_retr(self) -> None:
        """One of the first ``hold_retrs`` RETRs waits for the others (in its session's thread)."""
        if self._held is None:
            return
        with self._lock:
            self._holding += 1
            mine = self._holding <= self.hold_retrs
        if not mine:
            return
        try:
            self._held.wait()
            met = True
        except threading.BrokenBarrierError:
            met = False
        with self._lock:
            self.held_together = met and self.held_together is not False

    def retrs_of(self, name: str) -> list[int]:
        """The REST offsets of each RETR of ``name`` (relative to root), in order."""
        with self._lock:
            return [rest for path, rest in self.retrs if path == name]

    def stop(self) -> None:
        self._server.close_all()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_self_signed_cert(directory: str | Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host``: (PEM with cert and key for the server, CA file for clients)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = Path(directory)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    server_pem = directory / "server.pem"
    server_pem.write_bytes(cert_pem + key_pem)
    ca = directory / "ca.pem"
    ca.write_bytes(cert_pem)
    return server_pem, ca


Route = Callable[["HttpRequest"], tuple[int, dict[str, str], bytes]]


@dataclass(frozen=True)
class HttpRequest:
    """What a route sees of one GET request."""

    path: str
    """Path with query string."""
    headers: dict[str, str]


class LocalHttpServer:
    """A ``ThreadingHTTPServer`` for ``handler`` on 127.0.0.1, a random port, served from a
    daemon thread until :meth:`stop`: the one way the test servers and proxies listen."""

    def __init__(self, handler: type[Any], name: str = "http-server") -> None:
        from http.server import ThreadingHTTPServer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.host, self.port = "127.0.0.1", self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpServer(LocalHttpServer):
    """``http.server`` on 127.0.0.1, a random port, answering GETs from ``routes``.

    ``routes`` maps a path (with its query string, else the path alone) to a function of
    the request returning ``(status, headers, body)``; anything else is 404.
    ``requests`` lists every path asked for, in order (the server's own request log).
    """

    def __init__(self, routes: dict[str, Route]) -> None:
        from http.server import BaseHTTPRequestHandler

        self.routes = routes
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each keep-alive reply waits ~40 ms

            def do_GET(self) -> None:
                owner.requests.append(self.path)
                route = owner.routes.get(self.path) or owner.routes.get(self.path.split("?")[0])
                request = HttpRequest(self.path, dict(self.headers))
                status, headers, body = route(request) if route else (404, {"Content-Type": "text/plain"}, b"not found")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)


def s3_environment(url: str, bucket: str) -> dict[str, str]:
    """The variables a shell exports to run the CLI against the S3 at ``url`` (dummy credentials)."""
    return {"AWS_ACCESS_KEY_ID": TEST_AWS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url, "S3_URL": url, "S3_BUCKET": bucket}


def main(argv: list[str] | None = None) -> int:
    """``python -m module_system.testing s3``: an embedded S3 until Ctrl-C (see the module docstring)."""
    import argparse
    import shlex

    parser = argparse.ArgumentParser(prog="python -m module_system.testing",
                                     description="Embedded servers for trying module_system locally.")
    commands = parser.add_subparsers(dest="server", required=True)
    s3 = commands.add_parser("s3", help="an S3 (moto) on 127.0.0.1 with one bucket, until Ctrl-C")
    s3.add_argument("--bucket", default="landing", help="the bucket to create [default: landing]")
    s3.add_argument("--port", type=int, default=0, help="the port [default: a free one]")
    args = parser.parse_args(argv)
    server = S3Server(port=args.port)
    try:
        server.client().create_bucket(Bucket=args.bucket)
        click.echo("# module_system.testing: an S3 on 127.0.0.1 (moto); export these, Ctrl-C to stop")
        for name, value in s3_environment(server.url, args.bucket).items():
            click.echo(f"export {name}={shlex.quote(value)}")
        click.echo("# registry: destination: {bucket: ${S3_BUCKET}, endpoint_url: ${S3_URL}}")
        threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("# stopped", err=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
