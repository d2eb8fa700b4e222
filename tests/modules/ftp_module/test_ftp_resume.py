"""FtpModule resuming cut-off downloads with REST, against fault-injecting pyftpdlib servers.

The server's own RETR log (``FtpServer.retrs``: path and REST offset) is the witness that a
download resumed rather than restarted; the SHA-256 of the fetched file is the witness that
no byte was lost or written twice.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from common.config_model import ValidateConfig
from common.interfaces.base_module import FetchedFile, FetchFailed, JobContext
from common.job_config import resolve_source
from common.retry import RetryPolicy
from common.validators import ValidatorSet
from module_system.testing import FtpServer, make_self_signed_cert
from modules.ftp_module.main import FtpModule

KIB = 1024
CUT = 64 * KIB


class Retries:
    """The job's retry counter, with an optional hook run on each retry."""

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        self.count = 0
        self.hook = hook

    def __call__(self) -> None:
        self.count += 1
        if self.hook is not None:
            self.hook(self.count)


def make_ctx(retries: Retries, attempts: int = 6) -> JobContext:
    return JobContext(
        run_id="run-test", job_id="job-resume", service_id="ftp_test", module="ftp",
        validators=ValidatorSet(ValidateConfig(json_schema_path=None, json_schema=None, csv=None, html=None)),
        retry=RetryPolicy(attempts=attempts, backoff_s=0.001, max_backoff_s=0.005, counter=retries),
        timeout_s=10.0, stop=threading.Event(),
    )


def fetch(srv: FtpServer, workdir: Path, retries: Retries, **source: Any) -> list[FetchedFile | FetchFailed]:
    raw = {"host": srv.host, "port": srv.port, "user": srv.user, "password": srv.password, **source}
    ctx = make_ctx(retries)
    module = FtpModule(resolve_source(raw, FtpModule.source_schema, "test_registry.yaml"), ctx)
    try:
        return list(module.fetch(workdir))  # type: ignore[arg-type]
    finally:
        module.close()
        ctx.resources.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Two files of ~300 KiB and one small one (nothing to cut)."""
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "one.bin").write_bytes(os.urandom(300 * KIB + 7))
    (base / "sub" / "two.bin").write_bytes(os.urandom(150 * KIB + 1))
    (base / "small.txt").write_bytes(b"tiny\n")
    return base


def assert_intact(files: list[FetchedFile | FetchFailed], root: Path) -> None:
    assert all(isinstance(f, FetchedFile) for f in files), files
    assert sorted(f.name for f in files) == ["one.bin", "small.txt", "sub/two.bin"]
    for f in files:
        assert isinstance(f, FetchedFile)
        original = (root / f.name).read_bytes()
        assert (f.size, f.sha256) == (len(original), sha(original)), f.name
        assert f.path.read_bytes() == original, f.name


@pytest.mark.parametrize("reset", [False, True], ids=["fin_426", "tcp_rst"])
def test_cut_downloads_resume_at_the_bytes_already_fetched(root: Path, tmp_path: Path, reset: bool) -> None:
    retries = Retries()
    with FtpServer(root, drop_after_bytes=CUT, drop_transfers=3, drop_with_reset=reset) as srv, \
            capture_logs() as logs:
        files = fetch(srv, tmp_path / "work", retries)
        one, two = srv.retrs_of("one.bin"), srv.retrs_of("sub/two.bin")
        faults = srv.faults_injected
    assert_intact(files, root)
    # one.bin: cut three times, each try resuming where the last stopped
    offsets = one
    assert offsets[0] == 0 and len(offsets) == 4 and offsets[-1] > 0
    # never backwards (an RST may in principle discard bytes the client had not read yet)
    assert all(b >= a for a, b in itertools.pairwise(offsets)), offsets
    if not reset:  # a FIN delivers every byte sent: the offsets are exact
        assert offsets == [0, CUT, 2 * CUT, 3 * CUT]
        assert two == [0, CUT, 2 * CUT]  # 150 KiB: the third try has less than CUT left to cut
    assert faults == 5 and retries.count == faults
    resumed = [e for e in logs if e["event"] == "ftp_download_resumed"]
    assert [e["offset"] for e in resumed if e["uri"].endswith("/one.bin")] == offsets[1:]
    assert not [e for e in logs if e["event"] == "ftp_download_restarted"]
    print(f"\nresume ({'rst' if reset else 'fin'}): faults injected {faults}, survived {retries.count}, "
          f"RETR offsets one.bin {offsets}, files lost 0")


def test_without_rest_the_download_starts_over(root: Path, tmp_path: Path) -> None:
    retries = Retries()
    with FtpServer(root, drop_after_bytes=CUT, drop_transfers=2, rest_supported=False) as srv, \
            capture_logs() as logs:
        files = fetch(srv, tmp_path / "work", retries)
        retrs, faults, rests = list(srv.retrs), srv.faults_injected, srv.commands.count("REST")
    assert_intact(files, root)
    assert {rest for _, rest in retrs} == {0}, "every try starts from byte 0"
    assert [name for name, _ in retrs].count("one.bin") == 3
    assert faults == 4 and retries.count == 4
    assert rests == 1, "a refused REST is remembered for the rest of the job"
    assert [e["reply"] for e in logs if e["event"] == "ftp_rest_unsupported"] == ["502"]
    restarted = [e for e in logs if e["event"] == "ftp_download_restarted"]
    assert len(restarted) == 4 and all(e["discarded"] == CUT for e in restarted)


def test_a_file_changed_between_tries_starts_over(root: Path, tmp_path: Path) -> None:
    """Same size, new content and mtime after the cut: resuming would splice two versions."""
    target = root / "one.bin"
    fresh = os.urandom(target.stat().st_size)

    def replace_file(_: int) -> None:
        target.write_bytes(fresh)
        os.utime(target, (1_000_000_000, 1_000_000_000))

    retries = Retries(hook=replace_file)
    with FtpServer(root, drop_after_bytes=CUT, drop_match="one.bin") as srv, capture_logs() as logs:
        files = fetch(srv, tmp_path / "work", retries, include=["one.bin"])
        offsets = srv.retrs_of("one.bin")
    assert offsets == [0, 0]
    [fetched] = files
    assert isinstance(fetched, FetchedFile) and fetched.sha256 == sha(fresh)
    assert [e["reason"] for e in logs if e["event"] == "ftp_download_restarted"] == ["changed"]


def test_ftps_resumes_too(root: Path, tmp_path: Path) -> None:
    server_pem, ca = make_self_signed_cert(tmp_path)
    retries = Retries()
    with FtpServer(root, tls_cert=server_pem, drop_after_bytes=CUT, drop_transfers=1) as srv:
        files = fetch(srv, tmp_path / "work", retries, tls=True, ca_file=str(ca))
        one = srv.retrs_of("one.bin")
    assert_intact(files, root)
    assert one[0] == 0 and len(one) == 2 and one[1] > 0
    assert retries.count == 2


def test_a_file_cut_more_often_than_the_attempts_fails_alone(root: Path, tmp_path: Path) -> None:
    retries = Retries()
    with FtpServer(root, drop_after_bytes=4 * KIB, drop_transfers=100, drop_match="two.bin") as srv:
        raw = {"host": srv.host, "port": srv.port, "user": srv.user, "password": srv.password}
        ctx = make_ctx(retries, attempts=3)
        module = FtpModule(resolve_source(raw, FtpModule.source_schema, "r.yaml"), ctx)
        try:
            files = list(module.fetch(tmp_path / "work"))
        finally:
            module.close()
            ctx.resources.close()
        offsets = srv.retrs_of("sub/two.bin")
    by_name = {f.name: f for f in files}
    assert isinstance(by_name["sub/two.bin"], FetchFailed)
    assert isinstance(by_name["one.bin"], FetchedFile) and isinstance(by_name["small.txt"], FetchedFile)
    assert offsets == [0, 4 * KIB, 8 * KIB], "each of the three tries made progress"
    assert not (tmp_path / "work" / "sub" / "two.bin").exists(), "the partial file is removed"
