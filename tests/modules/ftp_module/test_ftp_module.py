"""FtpModule against a real pyftpdlib server on 127.0.0.1 (plain, without MLSD, and FTPS)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from common.config_model import ValidateConfig
from common.exceptions import ListingIncomplete, SourceError, is_transient
from common.interfaces.base_module import FetchedFile, JobContext
from common.job_config import resolve_source
from common.retry import RetryPolicy
from common.validators import ValidatorSet
from module_system.testing import FtpServer, make_self_signed_cert
from modules.ftp_module.exceptions import FtpAuthError, FtpSourceError, FtpTransientError
from modules.ftp_module.main import MAX_DEPTH, FtpModule

FILES: dict[str, bytes] = {
    "a.csv": b"id,name\n1,x\n",
    "b.txt": b"plain text\n",
    "sub/c.csv": b"id\n2\n",
    "sub/deeper/d.csv": b"id\n3\n",
    "sub/deeper/e.json": b"{}",
    "z dir/f.csv": b"id\n4\n",
}
BIG_NAME = "big/payload.bin"
BIG_SIZE = 5 * 1024 * 1024 + 17


@pytest.fixture(scope="module")
def ftp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ftp_root")
    for name, body in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
    (root / BIG_NAME).parent.mkdir()
    (root / BIG_NAME).write_bytes(os.urandom(BIG_SIZE))
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def server(ftp_root: Path) -> Iterator[FtpServer]:
    with FtpServer(ftp_root) as srv:
        yield srv


@pytest.fixture(scope="module")
def server_nomlsd(ftp_root: Path) -> Iterator[FtpServer]:
    with FtpServer(ftp_root, use_mlsd=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def tls_server(ftp_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FtpServer, Path]]:
    server_pem, ca = make_self_signed_cert(tmp_path_factory.mktemp("certs"))
    with FtpServer(ftp_root, tls_cert=server_pem) as srv:
        yield srv, ca


def make_ctx(stop: threading.Event | None = None) -> JobContext:
    return JobContext(
        run_id="run-test", job_id="job-1", service_id="ftp_test", module="ftp",
        validators=ValidatorSet(ValidateConfig(json_schema_path=None, json_schema=None, csv=None, html=None)),
        retry=RetryPolicy(attempts=2, backoff_s=0.01), timeout_s=10.0,
        stop=stop or threading.Event(),
    )


def source_for(srv: FtpServer, **overrides: Any) -> Any:
    """The source section as the config loader builds it: defaults filled, password a Secret."""
    raw = {"host": srv.host, "port": srv.port, "user": srv.user, "password": srv.password, **overrides}
    return resolve_source(raw, FtpModule.source_schema, "test_registry.yaml")


def fetch_all(source: Any, workdir: Path, ctx: JobContext | None = None) -> list[FetchedFile]:
    module = FtpModule(source, ctx or make_ctx())
    try:
        return list(module.fetch(workdir))
    finally:
        module.close()


def all_names() -> list[str]:
    return sorted([*FILES, BIG_NAME])


def test_walks_subfolders_with_relative_names(server: FtpServer, tmp_path: Path) -> None:
    files = fetch_all(source_for(server), tmp_path)
    assert [f.name for f in files] == all_names()
    deep = next(f for f in files if f.name == "sub/deeper/d.csv")
    assert deep.path.parent == tmp_path and deep.path.suffix == ".csv"  # local names are the sink's own
    assert deep.source_uri == f"ftp://127.0.0.1:{server.port}/sub/deeper/d.csv"
    assert deep.identity["size"] == "5"
    assert len(deep.identity["modify"]) >= 14


def test_content_size_and_sha256_match(server: FtpServer, ftp_root: Path, tmp_path: Path) -> None:
    for f in fetch_all(source_for(server), tmp_path):
        original = (ftp_root / f.name).read_bytes()
        assert f.size == len(original)
        assert f.sha256 == hashlib.sha256(original).hexdigest()
        assert f.path.read_bytes() == original


def test_big_file_streams(server: FtpServer, ftp_root: Path, tmp_path: Path) -> None:
    files = fetch_all(source_for(server, path="/big"), tmp_path)
    assert [f.name for f in files] == ["payload.bin"]
    digest = hashlib.sha256((ftp_root / BIG_NAME).read_bytes()).hexdigest()
    assert (files[0].size, files[0].sha256) == (BIG_SIZE, digest)


def test_include_globs_on_base_name(server: FtpServer, tmp_path: Path) -> None:
    files = fetch_all(source_for(server, include=["*.csv", "*.json"]), tmp_path)
    assert [f.name for f in files] == ["a.csv", "sub/c.csv", "sub/deeper/d.csv", "sub/deeper/e.json", "z dir/f.csv"]


def test_not_recursive_and_sub_path(server: FtpServer, tmp_path: Path) -> None:
    assert [f.name for f in fetch_all(source_for(server, recursive=False), tmp_path / "1")] == ["a.csv", "b.txt"]
    files = fetch_all(source_for(server, path="/sub", include=["*.csv"]), tmp_path / "2")
    assert [(f.name, f.source_uri) for f in files] == [
        ("c.csv", f"ftp://127.0.0.1:{server.port}/sub/c.csv"),
        ("deeper/d.csv", f"ftp://127.0.0.1:{server.port}/sub/deeper/d.csv"),
    ]


def test_relative_path_starts_at_login_folder(server: FtpServer, tmp_path: Path) -> None:
    files = fetch_all(source_for(server, path="sub/deeper"), tmp_path)
    assert [f.name for f in files] == ["d.csv", "e.json"]


def test_one_connection_for_listing_and_downloads(server: FtpServer, tmp_path: Path) -> None:
    logins = server.commands.count("USER")
    fetch_all(source_for(server), tmp_path)
    assert server.commands.count("USER") - logins == 1


def test_binary_type_is_set_once_per_session_not_once_per_file(server: FtpServer, ftp_root: Path,
                                                               tmp_path: Path) -> None:
    before = len(server.commands)
    files = fetch_all(source_for(server), tmp_path)
    sent = server.commands[before:]
    last_listing = max(i for i, command in enumerate(sent) if command == "MLSD")
    downloads = sent[last_listing + 1:]  # MLSD switched the session to ASCII (TYPE A)
    assert downloads.count("RETR") == len(files) == len(all_names())
    assert downloads.count("TYPE") == 1
    for f in files:
        assert f.sha256 == hashlib.sha256((ftp_root / f.name).read_bytes()).hexdigest()


def test_without_mlsd_lists_the_same_files(server_nomlsd: FtpServer, ftp_root: Path, tmp_path: Path) -> None:
    files = fetch_all(source_for(server_nomlsd), tmp_path)
    assert [f.name for f in files] == all_names()
    assert "NLST" in server_nomlsd.commands
    for f in files:
        assert f.sha256 == hashlib.sha256((ftp_root / f.name).read_bytes()).hexdigest()
        assert f.identity["size"] == str(f.size)


def test_stop_event_is_honoured_between_files(server: FtpServer, tmp_path: Path) -> None:
    stop = threading.Event()
    module = FtpModule(source_for(server), make_ctx(stop))
    got = []
    try:
        for f in module.fetch(tmp_path):
            got.append(f.name)
            stop.set()
    finally:
        module.close()
    assert got == [all_names()[0]]


def test_reconnects_after_dropped_connection(server: FtpServer, tmp_path: Path) -> None:
    logins = server.commands.count("USER")
    module = FtpModule(source_for(server, include=["*.csv"]), make_ctx())
    names = []
    try:
        for f in module.fetch(tmp_path):
            names.append(f.name)
            if len(names) == 1:  # the network drops the control connection between files
                assert module._ftp is not None
                module._ftp.sock.shutdown(socket.SHUT_RDWR)
    finally:
        module.close()
    assert names == ["a.csv", "sub/c.csv", "sub/deeper/d.csv", "z dir/f.csv"]
    assert server.commands.count("USER") - logins == 2


def test_bad_password_is_an_auth_error(server: FtpServer, tmp_path: Path) -> None:
    secret = "wrong-pass-1234"
    with pytest.raises(FtpAuthError) as info:
        fetch_all(source_for(server, password=secret), tmp_path)
    err = info.value
    assert not is_transient(err)
    assert isinstance(err, SourceError)
    assert secret not in str(err) and secret not in repr(err.fields)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is FtpAuthError and str(clone) == str(err) and clone.uri == err.uri


def test_missing_path_is_a_source_error(server: FtpServer, tmp_path: Path) -> None:
    for srv_source in (source_for(server, path="/nope"), source_for(server, path="/nope", recursive=False)):
        with pytest.raises(FtpSourceError) as info:
            fetch_all(srv_source, tmp_path)
        assert not is_transient(info.value)
        assert "/nope" in str(info.value)


def test_missing_path_without_mlsd(server_nomlsd: FtpServer, tmp_path: Path) -> None:
    with pytest.raises(FtpSourceError) as info:
        fetch_all(source_for(server_nomlsd, path="/nope"), tmp_path)
    assert not is_transient(info.value)


def test_refused_connection_is_transient(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        source = resolve_source({"host": "127.0.0.1", "port": port}, FtpModule.source_schema, "test_registry.yaml")
        with pytest.raises(FtpTransientError) as info:
            fetch_all(source, tmp_path)
    assert is_transient(info.value)
    assert pickle.loads(pickle.dumps(info.value)).uri == f"ftp://127.0.0.1:{port}"


def test_ftps_with_ca_file(tls_server: tuple[FtpServer, Path], ftp_root: Path, tmp_path: Path) -> None:
    srv, ca = tls_server
    files = fetch_all(source_for(srv, tls=True, ca_file=str(ca)), tmp_path)
    assert [f.name for f in files] == all_names()
    for f in files:
        assert f.sha256 == hashlib.sha256((ftp_root / f.name).read_bytes()).hexdigest()


def test_ftps_untrusted_certificate_fails(tls_server: tuple[FtpServer, Path], tmp_path: Path) -> None:
    srv, _ = tls_server
    with pytest.raises(FtpSourceError) as info:
        fetch_all(source_for(srv, tls=True), tmp_path)
    assert not is_transient(info.value)
    assert "certificate" in str(info.value)


def test_ftps_verification_switched_off_per_service_warns(tls_server: tuple[FtpServer, Path],
                                                          tmp_path: Path) -> None:
    srv, _ = tls_server
    with capture_logs() as logs:
        files = fetch_all(source_for(srv, tls=True, verify_tls=False), tmp_path)
    assert [f.name for f in files] == all_names()
    assert any(e["event"] == "tls_verification_disabled" and e["log_level"] == "warning" for e in logs)


def test_plain_client_refused_by_tls_server(tls_server: tuple[FtpServer, Path], tmp_path: Path) -> None:
    srv, _ = tls_server
    with pytest.raises(FtpSourceError):
        fetch_all(source_for(srv), tmp_path)


def test_schema_fills_defaults(server: FtpServer) -> None:
    source = resolve_source({"host": "h"}, FtpModule.source_schema, "r.yaml")
    assert dict(source) | {"include": list(source["include"])} == {
        "host": "h", "port": 21, "user": "anonymous", "password": source["password"], "tls": False,
        "ca_file": None, "verify_tls": True, "path": "/", "include": ["*"], "recursive": True, "passive": True,
    }
    assert repr(source["password"]) == "'***'"


def test_a_tree_deeper_than_the_depth_limit_is_an_incomplete_listing(server: FtpServer, ftp_root: Path,
                                                                      tmp_path: Path) -> None:
    top = ftp_root / "too-deep"
    folder = top
    for level in range(MAX_DEPTH + 2):
        folder = folder / "d"
        folder.mkdir(parents=True)
        if level in (0, MAX_DEPTH + 1):
            (folder / f"f{level}.txt").write_bytes(b"x")
    module = FtpModule(source_for(server, path="/too-deep"), make_ctx())
    got: list[Any] = []
    try:
        with pytest.raises(ListingIncomplete, match=rf"depth {MAX_DEPTH} have sub-folders that were not listed"):
            got.extend(module.fetch(tmp_path))  # what was listed is yielded first
    finally:
        module.close()
        shutil.rmtree(top)
    assert [f.name for f in got] == ["d/f0.txt"]
