"""FtpModule against a real pyftpdlib server on 127.0.0.1 (plain, without MLSD, and FTPS), driven
directly: ``fetch`` runs the file-source template one file at a time, ``fetch_entry`` one download."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import pickle
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from common.config_model import ValidateConfig
from common.exceptions import ListingIncomplete, SourceError, is_transient
from common.interfaces.base_module import FetchedFile, FetchFailed, JobContext
from common.job_config import resolve_source
from common.retry import RetryPolicy
from common.validators import ValidatorSet
from module_system.testing import FtpServer, make_self_signed_cert
from modules.ftp_module.exceptions import (
    FtpAuthError,
    FtpSourceError,
    FtpTransientError,
)
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


def make_ctx(stop: threading.Event | None = None, retries: list[int] | None = None) -> JobContext:
    """A job's context with a run pool of its own; ``retries`` gets a 1 per retry."""
    counter = (lambda: retries.append(1)) if retries is not None else None
    return JobContext(
        run_id="run-test", job_id="job-1", service_id="ftp_test", module="ftp",
        validators=ValidatorSet(ValidateConfig(json_schema_path=None, json_schema=None, csv=None, html=None)),
        retry=RetryPolicy(attempts=2, backoff_s=0.01, counter=counter), timeout_s=10.0,
        stop=stop or threading.Event(),
    )


def source_for(srv: FtpServer, **overrides: Any) -> Any:
    """The source section as the config loader builds it: defaults filled, password a Secret."""
    raw = {"host": srv.host, "port": srv.port, "user": srv.user, "password": srv.password, **overrides}
    return resolve_source(raw, FtpModule.source_schema, "test_registry.yaml")


def fetch_all(source: Any, workdir: Path, ctx: JobContext | None = None) -> list[FetchedFile]:
    """One job's files (the template one file at a time), then the end of its run (the pool closed)."""
    ctx = ctx or make_ctx()
    module = FtpModule(source, ctx)
    try:
        return list(module.fetch(workdir))  # type: ignore[arg-type]
    finally:
        module.close()
        ctx.resources.close()


def all_names() -> list[str]:
    """The listing order: breadth first, a folder's files in name order, then its sub-folders'."""
    return ["a.csv", "b.txt", BIG_NAME, "sub/c.csv", "z dir/f.csv", "sub/deeper/d.csv", "sub/deeper/e.json"]


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
    files = fetch_all(source_for(server, include=["*.csv", "*.json"], exclude=["e.*"]), tmp_path)
    assert [f.name for f in files] == ["a.csv", "sub/c.csv", "z dir/f.csv", "sub/deeper/d.csv"]


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


def test_binary_type_is_not_sent_again_between_downloads(server: FtpServer, ftp_root: Path,
                                                          tmp_path: Path) -> None:
    before = len(server.commands)
    files = fetch_all(source_for(server), tmp_path)
    sent = server.commands[before:]
    retrs = [i for i, command in enumerate(sent) if command == "RETR"]
    assert len(retrs) == len(files) == len(all_names())
    for a, b in itertools.pairwise(retrs):
        between = sent[a + 1:b]
        if "MLSD" not in between:  # a listing switches the session to ASCII (TYPE A); nothing else does
            assert "TYPE" not in between, between
    assert sent.count("TYPE") <= 1 + 2 * sent.count("MLSD")  # at login, then A for a listing and I after it
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


def test_a_session_dropped_while_idle_is_replaced_without_using_a_try(server: FtpServer, tmp_path: Path) -> None:
    logins = server.commands.count("USER")
    retries: list[int] = []
    ctx = make_ctx(retries=retries)
    module = FtpModule(source_for(server, include=["*.csv"]), ctx)
    names = []
    try:
        with capture_logs() as logs:
            for f in module.fetch(tmp_path):
                names.append(f.name)
                if len(names) == 1:  # the network drops the idle session between files
                    with ctx.resources.pooled(module._login, lambda: pytest.fail("no idle session")) as ftp:
                        assert ftp.sock is not None
                        ftp.sock.shutdown(socket.SHUT_RDWR)
    finally:
        module.close()
        ctx.resources.close()
    assert names == ["a.csv", "sub/c.csv", "z dir/f.csv", "sub/deeper/d.csv"]
    assert [e["event"] for e in logs].count("ftp_stale_session_replaced") == 1
    assert server.commands.count("USER") - logins == 2
    assert retries == [], "a stale session is not a failed try"


def test_sessions_are_reused_across_jobs_of_a_run_and_closed_with_quit_at_its_end(server: FtpServer,
                                                                                   tmp_path: Path) -> None:
    ctx = make_ctx()
    logins, quits = server.commands.count("USER"), server.commands.count("QUIT")
    for job in ("job-1", "job-2"):
        module = FtpModule(source_for(server, path="/sub"), dataclasses.replace(ctx, job_id=job))
        assert [f.name for f in module.fetch(tmp_path / job)] == ["c.csv", "deeper/d.csv", "deeper/e.json"]
        module.close()
    assert server.commands.count("USER") - logins == 1, "the second job reused the first job's session"
    assert server.commands.count("QUIT") == quits, "sessions stay open until the run ends"
    ctx.resources.close()
    assert server.commands.count("QUIT") - quits == 1


def test_parallel_downloads_of_one_job_run_on_separate_sessions(ftp_root: Path, tmp_path: Path) -> None:
    with FtpServer(ftp_root, hold_retrs=3) as srv:  # the first three RETRs wait until all three came
        ctx = make_ctx()
        module = FtpModule(source_for(srv, recursive=False), ctx)
        try:
            entries = list(module.list_entries())
            with ThreadPoolExecutor(3) as pool:
                files = list(pool.map(lambda e: module.fetch_entry(e, tmp_path), [*entries, *entries[:1]]))
        finally:
            ctx.resources.close()
        held, logins, peak = srv.held_together, srv.commands.count("USER"), srv.peak_sessions
    assert held is True, "three downloads were in flight at once"
    assert logins == peak == 3, "one session each; the listing's was reused by a download"
    assert [f.name for f in files if isinstance(f, FetchedFile)] == ["a.csv", "b.txt", "a.csv"]
    for f in files:
        assert isinstance(f, FetchedFile)
        assert f.sha256 == hashlib.sha256((ftp_root / f.name).read_bytes()).hexdigest()


def test_a_file_deleted_after_the_listing_is_skipped(server: FtpServer, ftp_root: Path, tmp_path: Path) -> None:
    (ftp_root / "gone").mkdir()
    (ftp_root / "gone" / "a.csv").write_bytes(b"id\n1\n")
    (ftp_root / "gone" / "b.csv").write_bytes(b"id\n2\n")
    ctx = make_ctx()
    module = FtpModule(source_for(server, path="/gone"), ctx)
    try:
        entries = list(module.list_entries())
        (ftp_root / "gone" / "a.csv").unlink()
        logins = server.commands.count("USER")
        with capture_logs() as logs:
            assert module.fetch_entry(entries[0], tmp_path) is None
        fetched = module.fetch_entry(entries[1], tmp_path)
        assert server.commands.count("USER") == logins, "the session that answered 550 stayed in use"
    finally:
        ctx.resources.close()
        shutil.rmtree(ftp_root / "gone")
    assert isinstance(fetched, FetchedFile) and fetched.name == "b.csv"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["file_vanished"]
    assert list(tmp_path.iterdir()) == [fetched.path], "nothing left of the vanished file"


def test_a_file_the_user_may_not_read_fails_and_is_not_taken_for_vanished(server: FtpServer,
                                                                        tmp_path: Path) -> None:
    server._server.handler.authorizer.add_user("lister", "lister-pw-61d0", str(server.root), perm="el")
    ctx = make_ctx()
    module = FtpModule(source_for(server, user="lister", password="lister-pw-61d0", path="/sub", recursive=False),
                       ctx)
    try:
        [entry] = list(module.list_entries())
        got = module.fetch_entry(entry, tmp_path)
    finally:
        ctx.resources.close()
        server._server.handler.authorizer.remove_user("lister")
    assert isinstance(got, FetchFailed) and got.status == "failed"
    assert "not found or not accessible" in got.error


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
    assert dict(source) | {"include": list(source["include"]), "exclude": list(source["exclude"])} == {
        "host": "h", "port": 21, "user": "anonymous", "password": source["password"], "tls": False,
        "ca_file": None, "verify_tls": True, "path": "/", "include": ["*"], "exclude": [], "recursive": True,
        "passive": True,
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
    ctx = make_ctx()
    module = FtpModule(source_for(server, path="/too-deep"), ctx)
    got: list[Any] = []
    try:
        with pytest.raises(ListingIncomplete, match=rf"depth {MAX_DEPTH} have sub-folders that were not listed"):
            got.extend(module.fetch(tmp_path))  # what was listed is yielded first
    finally:
        module.close()
        ctx.resources.close()
        shutil.rmtree(top)
    assert [f.name for f in got] == ["d/f0.txt"]
