"""SftpModule against a real SFTP server (tests/servers/sftp.py): the contract suite, logins,
host key checking, the walk, resume after a dropped connection, vanished files, stale sessions."""

from __future__ import annotations

import io
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from structlog.testing import capture_logs

from common.exceptions import ConfigError, ListingIncomplete
from common.interfaces.base_module import FetchedFile, JobContext
from module_system.contract import (
    ModuleContract,
    fetch_all,
    make_context,
    resolve_source,
)
from modules.sftp_module.exceptions import (
    SftpAuthError,
    SftpHostKeyError,
)
from modules.sftp_module.main import WINDOW, SftpModule
from tests.servers.sftp import SftpServer, new_key

CLIENT_KEY = new_key()


@pytest.fixture(scope="module")
def sftp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sftp-root")


@pytest.fixture(scope="module")
def sftp_server(sftp_root: Path) -> Iterator[SftpServer]:
    with SftpServer(sftp_root, authorized_keys=[CLIENT_KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def known_hosts(sftp_server: SftpServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "known_hosts"
    path.write_text("[other.example]:22 " + new_key().get_name() + " " + new_key().get_base64() + "\n"
                    + sftp_server.known_hosts_line())
    return path


@pytest.fixture()
def folder(sftp_root: Path) -> Path:
    path = sftp_root / f"t-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    return path


def source_for(srv: SftpServer, known_hosts: Path, folder: Path | None = None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"host": srv.host, "port": srv.port, "user": srv.user, "password": srv.password,
                           "known_hosts": str(known_hosts)}
    if folder is not None:
        raw["path"] = "/" + folder.relative_to(srv.root).as_posix()
    raw.update(extra)
    return {k: v for k, v in raw.items() if v is not None}


def module_for(raw: dict[str, Any], ctx: JobContext | None = None) -> SftpModule:
    return SftpModule(resolve_source(raw, SftpModule.source_schema, "test_registry.yaml"), ctx or make_context())


def seed(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class TestSftpContract(ModuleContract):
    @pytest.fixture(autouse=True)
    def _server(self, sftp_server: SftpServer, known_hosts: Path) -> None:
        self.server = sftp_server
        self.known_hosts = known_hosts

    @pytest.fixture
    def module_cls(self) -> type[SftpModule]:
        return SftpModule

    def make_source(self, tmp_path: Path, files: dict[str, bytes]) -> dict[str, Any]:
        folder = self.server.root / f"contract-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        seed(folder, files)
        return source_for(self.server, self.known_hosts, folder)

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        return source_for(self.server, self.known_hosts, path=f"/does-not-exist-{uuid.uuid4().hex[:12]}")


# -- logins ---------------------------------------------------------------------------


def openssh_text(key: ed25519.Ed25519PrivateKey, passphrase: bytes | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption).decode()


def names(files: list[Any]) -> list[str]:
    assert all(isinstance(f, FetchedFile) for f in files), files
    return [f.name for f in files]


def test_key_login_with_key_text_a_key_file_and_an_encrypted_key(tmp_path: Path, sftp_root: Path,
                                                                  known_hosts: Path, folder: Path) -> None:
    seed(folder, {"a.csv": b"id\n1\n"})
    raw_key = ed25519.Ed25519PrivateKey.generate()
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(openssh_text(raw_key)))
    pem = io.StringIO()
    CLIENT_KEY.write_private_key(pem, password="pem-pass-phrase")
    key_file = tmp_path / "id_ecdsa"
    CLIENT_KEY.write_private_key_file(str(key_file))
    with SftpServer(sftp_root, authorized_keys=[key, CLIENT_KEY], password="not-used-here") as srv:
        (tmp_path / "kh").write_text(srv.known_hosts_line())
        common = {"password": None}
        variants = [
            {"private_key": openssh_text(raw_key)},
            {"private_key": openssh_text(raw_key, b"open-ssh-phrase"), "private_key_passphrase": "open-ssh-phrase"},
            {"private_key_path": str(key_file)},
            {"private_key": pem.getvalue(), "private_key_passphrase": "pem-pass-phrase"},
        ]
        for extra in variants:
            files = fetch_all(module_for(source_for(srv, tmp_path / "kh", folder, **common, **extra)), tmp_path / "w")
            assert names(files) == ["a.csv"], extra.keys()
        assert srv.logins >= len(variants) and srv.refused_logins == 0


@pytest.mark.parametrize(("extra", "reason"), [
    ({"password": "wrong-password-123"}, "login refused for user 'feeder' (tried password)"),
    ({"password": None, "private_key": "not a key at all"}, "cannot load private_key: not a private key"),
    ({"password": None, "private_key_path": "/no/such/id_rsa"}, "cannot read private_key_path /no/such/id_rsa"),
    ({"password": None}, "tried no credentials"),
])
def test_refused_or_unusable_credentials_fail_the_source_at_once(sftp_server: SftpServer, known_hosts: Path,
                                                                  folder: Path, tmp_path: Path, extra: dict[str, Any],
                                                                  reason: str) -> None:
    seed(folder, {"a.csv": b"1"})
    module = module_for(source_for(sftp_server, known_hosts, folder, **extra))
    with capture_logs() as logs, pytest.raises(SftpAuthError) as caught:
        fetch_all(module, tmp_path / "w")
    assert reason in str(caught.value)
    assert pickle.loads(pickle.dumps(caught.value)).message == caught.value.message
    assert "wrong-password-123" not in str(caught.value) + repr(logs)


def test_a_wrong_passphrase_is_named(sftp_server: SftpServer, known_hosts: Path, folder: Path, tmp_path: Path) -> None:
    text = openssh_text(ed25519.Ed25519PrivateKey.generate(), b"right-phrase")
    for extra, reason in (({"private_key_passphrase": "wrong-phrase"}, "wrong private_key_passphrase"),
                          ({}, "it is encrypted: set private_key_passphrase")):
        module = module_for(source_for(sftp_server, known_hosts, folder, password=None, private_key=text, **extra))
        with pytest.raises(SftpAuthError, match=reason):
            list(module.list_entries())


def test_key_text_and_key_file_together_are_a_config_error(sftp_server: SftpServer, known_hosts: Path) -> None:
    raw = source_for(sftp_server, known_hosts, private_key="x", private_key_path="/k")
    with pytest.raises(ConfigError, match=r"'source\.private_key_path': cannot be set with private_key"):
        module_for(raw)
    raw = source_for(sftp_server, known_hosts, host_key_fingerprint="SHA256:" + "A" * 43,
                     insecure_skip_host_key_check=True)
    with pytest.raises(ConfigError, match=r"insecure_skip_host_key_check': cannot be set with host_key_fingerprint"):
        module_for(raw)


# -- host keys ------------------------------------------------------------------------


def test_an_unknown_host_key_is_refused_before_logging_in(sftp_server: SftpServer, folder: Path,
                                                          tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    refused = sftp_server.refused_logins
    for known in (empty, tmp_path / "missing"):
        with pytest.raises(SftpHostKeyError) as caught:
            list(module_for(source_for(sftp_server, known, folder)).list_entries())
        message = str(caught.value)
        assert "unknown host key" in message and sftp_server.fingerprint in message
        assert f"[127.0.0.1]:{sftp_server.port}" in message
    assert "(no such file)" in message
    assert sftp_server.refused_logins == refused  # no password was sent to a server not known


def test_a_different_host_key_is_a_mismatch(sftp_server: SftpServer, folder: Path, tmp_path: Path) -> None:
    impostor = new_key()
    known = tmp_path / "known_hosts"
    known.write_text(sftp_server.known_hosts_line(impostor))
    with pytest.raises(SftpHostKeyError, match="host key mismatch") as caught:
        list(module_for(source_for(sftp_server, known, folder)).list_entries())
    assert impostor.fingerprint in str(caught.value) and sftp_server.fingerprint in str(caught.value)


def test_a_pinned_fingerprint_replaces_known_hosts(sftp_server: SftpServer, folder: Path, tmp_path: Path) -> None:
    seed(folder, {"a.csv": b"1"})
    nowhere = tmp_path / "no-known-hosts"
    ok = module_for(source_for(sftp_server, nowhere, folder, host_key_fingerprint=sftp_server.fingerprint))
    assert names(fetch_all(ok, tmp_path / "w")) == ["a.csv"]
    wrong = module_for(source_for(sftp_server, nowhere, folder, host_key_fingerprint=new_key().fingerprint + "="))
    with pytest.raises(SftpHostKeyError, match="host key mismatch"):
        list(wrong.list_entries())


def test_skipping_the_host_key_check_is_a_warning(sftp_server: SftpServer, folder: Path, tmp_path: Path) -> None:
    seed(folder, {"a.csv": b"1"})
    module = module_for(source_for(sftp_server, tmp_path / "none", folder, insecure_skip_host_key_check=True))
    with capture_logs() as logs:
        assert names(fetch_all(module, tmp_path / "w")) == ["a.csv"]
    warned = [e for e in logs if e["event"] == "sftp_host_key_not_checked"]
    assert warned and warned[0]["log_level"] == "warning" and warned[0]["fingerprint"] == sftp_server.fingerprint


# -- the walk -------------------------------------------------------------------------


def test_listing_is_recursive_sorted_and_follows_links_once(sftp_server: SftpServer, known_hosts: Path,
                                                            folder: Path) -> None:
    seed(folder, {"b.csv": b"bb", "a.csv": b"a", "sub/x.txt": b"x", "sub/deep/y.txt": b"yy"})
    os.symlink(folder / "a.csv", folder / "link.csv")
    os.symlink(folder, folder / "sub" / "loop")  # a link back up: walked once, not forever
    os.symlink(folder / "gone", folder / "broken")
    entries = list(module_for(source_for(sftp_server, known_hosts, folder)).list_entries())
    assert [e.name for e in entries] == ["a.csv", "b.csv", "link.csv", "sub/x.txt", "sub/deep/y.txt"]
    first = entries[0]
    assert first.size == 1 and first.identity == {"size": "1", "mtime": str(int((folder / "a.csv").stat().st_mtime))}
    assert first.modified is not None and first.modified.utcoffset() is not None
    assert first.modified.timestamp() == int((folder / "a.csv").stat().st_mtime)
    assert first.source_uri == f"sftp://127.0.0.1:{sftp_server.port}/{folder.name}/a.csv"
    flat = list(module_for(source_for(sftp_server, known_hosts, folder, recursive=False)).list_entries())
    assert [e.name for e in flat] == ["a.csv", "b.csv", "link.csv"]


def test_a_relative_path_starts_at_the_login_folder(sftp_server: SftpServer, known_hosts: Path,
                                                    folder: Path) -> None:
    seed(folder, {"a.csv": b"1"})
    raw = source_for(sftp_server, known_hosts, path=folder.name)
    assert [e.name for e in module_for(raw).list_entries()] == ["a.csv"]


def test_a_file_deleted_after_the_listing_is_skipped(sftp_server: SftpServer, known_hosts: Path,
                                                     folder: Path, tmp_path: Path) -> None:
    seed(folder, {"a.csv": b"1", "b.csv": b"2"})
    module = module_for(source_for(sftp_server, known_hosts, folder))
    entries = list(module.list_entries())
    (folder / "a.csv").unlink()
    assert module.fetch_entry(entries[0], tmp_path / "w") is None
    assert isinstance(module.fetch_entry(entries[1], tmp_path / "w"), FetchedFile)
    module.close()


def test_sessions_the_server_closed_while_idle_are_replaced(sftp_server: SftpServer, known_hosts: Path,
                                                            folder: Path, tmp_path: Path) -> None:
    seed(folder, {"a.csv": b"1", "b.csv": b"2"})
    ctx = make_context(attempts=1)
    module = module_for(source_for(sftp_server, known_hosts, folder), ctx)
    first, second = list(module.list_entries())
    assert isinstance(module.fetch_entry(first, tmp_path / "w"), FetchedFile)
    sftp_server.drop_connections()  # e.g. the server's idle timeout
    assert isinstance(module.fetch_entry(second, tmp_path / "w"), FetchedFile)  # one try only: no retry used
    ctx.resources.close()


# -- resume ---------------------------------------------------------------------------


def test_a_dropped_download_resumes_where_it_stopped(sftp_root: Path, tmp_path: Path) -> None:
    folder = sftp_root / f"resume-{uuid.uuid4().hex[:8]}"
    data = os.urandom(3 * 1024 * 1024 + 5)
    seed(folder, {"big.bin": data, "small.txt": b"small"})
    cut = WINDOW + 100 * 1024  # inside the second window's first block
    with SftpServer(sftp_root, drop_after_bytes=cut, drops=1) as srv:
        (tmp_path / "kh").write_text(srv.known_hosts_line())
        with capture_logs() as logs:
            files = fetch_all(module_for(source_for(srv, tmp_path / "kh", folder), make_context(attempts=3)),
                              tmp_path / "w")
        big = f"{folder.name}/big.bin"
        offsets, reads = srv.opens_of(big), srv.reads_of(big)
        assert srv.drops_done == 1
    assert names(files) == ["big.bin", "small.txt"]
    assert files[0].path.read_bytes() == data
    # The server hung up at the first read past the cut, in the second window: the client had the
    # first window whole and the next one in part, so it reads on from the end of the first.
    resumed_at = WINDOW
    assert offsets == [0, resumed_at], (offsets, reads)
    (first_min, _), (second_min, second_served) = reads
    assert first_min == 0
    assert second_min == resumed_at, ("resumed, not restarted: no byte before the resume point asked for again", reads)
    assert second_served >= len(data) - resumed_at, reads
    assert [e["offset"] for e in logs if e["event"] == "sftp_download_resumed"] == [resumed_at]


def test_a_tree_deeper_than_the_limit_is_listed_in_part_then_fails(sftp_server: SftpServer, known_hosts: Path,
                                                                   folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import modules.sftp_module.main as sftp_main

    monkeypatch.setattr(sftp_main, "MAX_DEPTH", 2)
    seed(folder, {"a.csv": b"1", "x/b.csv": b"2", "x/y/c.csv": b"3", "x/y/z/d.csv": b"4", "x/y/w/e.csv": b"5"})
    listed: list[str] = []
    with pytest.raises(ListingIncomplete, match=r"1 folder\(s\) at depth 2"):
        listed.extend(e.name for e in module_for(source_for(sftp_server, known_hosts, folder)).list_entries())
    assert listed == ["a.csv", "x/b.csv", "x/y/c.csv"]


def test_known_hosts_lines_paramiko_cannot_read_are_skipped_and_revoked_keys_refused(
        sftp_server: SftpServer, folder: Path, tmp_path: Path) -> None:
    seed(folder, {"a.csv": b"1"})
    known = tmp_path / "known_hosts"
    other = new_key()
    odd = ("# a comment\n@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE\n"
           "garbage line\n" + f"|1|{'A' * 28}|{'B' * 28} {other.get_name()} {other.get_base64()}\n"
           f"{paramiko.HostKeys.hash_host('other.example')} {other.get_name()} {other.get_base64()}\n")
    known.write_text(odd + sftp_server.known_hosts_line())
    assert [e.name for e in module_for(source_for(sftp_server, known, folder)).list_entries()] == ["a.csv"]
    revoked_line = f"@revoked * {sftp_server.host_key.get_name()} {sftp_server.host_key.get_base64()}\n"
    known.write_text(odd + revoked_line + sftp_server.known_hosts_line())
    with pytest.raises(SftpHostKeyError, match="marked @revoked"):
        list(module_for(source_for(sftp_server, known, folder)).list_entries())


def test_a_hashed_known_hosts_name_matches(sftp_server: SftpServer, folder: Path, tmp_path: Path) -> None:
    seed(folder, {"a.csv": b"1"})
    known = tmp_path / "known_hosts"
    name = paramiko.HostKeys.hash_host(f"[{sftp_server.host}]:{sftp_server.port}")
    known.write_text(f"{name} {sftp_server.host_key.get_name()} {sftp_server.host_key.get_base64()}\n")
    assert [e.name for e in module_for(source_for(sftp_server, known, folder)).list_entries()] == ["a.csv"]
