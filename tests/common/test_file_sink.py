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


def parts_of(data: bytes, size: int) -> tuple[str, ...]:
    return tuple(hashlib.sha256(data[i:i + size]).hexdigest() for i in range(0, len(data), size))


@pytest.mark.parametrize("total", [99, 100, 101, 250, 300, 1000])
@pytest.mark.parametrize("chunk", [1, 7, 64, 100, 333])
def test_part_digests_are_streamed_once_the_file_reaches_the_threshold(tmp_path: Path, total: int,
                                                                        chunk: int) -> None:
    data = bytes(range(256)) * 4
    data = data[:total]
    parts = file_sink.PartHashing(part_size=50, from_bytes=100)
    with FileSink(tmp_path, "big.bin", "ftp://h/big.bin", {}, parts=parts) as sink:
        for start in range(0, total, chunk):
            sink.write(data[start:start + chunk])
        fetched = sink.finish()
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    if total < 100:  # below the threshold: a single PUT, no part digests
        assert fetched.part_sha256 is None and fetched.part_size is None
    else:
        assert fetched.part_size == 50 and fetched.part_sha256 == parts_of(data, 50)


def test_part_digests_start_over_with_the_file(tmp_path: Path) -> None:
    parts = file_sink.PartHashing(part_size=4, from_bytes=8)
    with FileSink(tmp_path, "big.bin", "ftp://h/big.bin", {}, parts=parts) as sink:
        sink.write(b"stale bytes here")
        sink.reset()  # a download restarted from byte 0
        sink.write(b"0123456789")
        fetched = sink.finish()
    assert fetched.part_sha256 == parts_of(b"0123456789", 4)


@pytest.mark.parametrize("names", [
    ["s" * 300 + ".txt"],  # longer than a file name may be
    ["m", "m/x.txt"],  # a file, and a file below it
    ["../../escape.csv", "/etc/passwd", "a\\b.csv", "caf\udce9.csv"],
])
def test_local_files_never_use_the_source_name(tmp_path: Path, names: list[str]) -> None:
    fetched = []
    for n, name in enumerate(names):
        with FileSink(tmp_path, name, f"s3://b/{n}", {}) as sink:
            sink.write(name.encode("utf-8", "surrogateescape"))
            fetched.append(sink.finish())
    assert [f.name for f in fetched] == names, "the logical name is kept as given"
    assert all(f.path.parent == tmp_path for f in fetched) and len({f.path for f in fetched}) == len(names)
    assert [f.path.read_bytes() for f in fetched] == [n.encode("utf-8", "surrogateescape") for n in names]
    assert fetched[0].path.suffix == (".txt" if names[0].endswith(".txt") else "" if names[0] == "m" else ".csv")
