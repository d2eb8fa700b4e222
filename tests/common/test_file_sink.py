"""FileSink: hashes while writing; MD5 only for files small enough to go in one PUT."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from common import file_sink
from common.file_sink import FileSink


def test_small_file_gets_sha256_and_md5(tmp_path: Path) -> None:
    with FileSink(tmp_path, "a/b.csv", "ftp://h/a/b.csv", {}) as sink:
        for chunk in (b"id,x\n", b"1,2\n"):
            sink.write(chunk)
        fetched = sink.finish()
    data = b"id,x\n1,2\n"
    assert (fetched.size, fetched.sha256) == (9, hashlib.sha256(data).hexdigest())
    assert fetched.md5 == hashlib.md5(data).hexdigest()
    assert fetched.path.read_bytes() == data


def test_md5_is_dropped_past_the_limit_and_restarts_with_the_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_sink, "MD5_MAX_BYTES", 10)
    with FileSink(tmp_path, "big.bin", "ftp://h/big.bin", {}) as sink:
        sink.write(b"x" * 8)
        sink.write(b"y" * 8)
        assert sink.finish().md5 is None
    with FileSink(tmp_path, "again.bin", "ftp://h/again.bin", {}) as sink:
        sink.write(b"x" * 16)
        sink.reset()  # a download restarted from byte 0
        sink.write(b"z" * 4)
        fetched = sink.finish()
    assert fetched.md5 == hashlib.md5(b"zzzz").hexdigest() and fetched.size == 4
