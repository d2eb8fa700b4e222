"""FileSink: hashes while writing, and runs the destination's stream hooks (MD5, part digests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from common.file_sink import FileSink
from common.interfaces.base_module import FetchedFile
from common.stream_hooks import Md5Hook, PartSha256Hook


def streamed(tmp_path: Path, name: str, hooks: dict, chunks: list[bytes], restart_after: int | None = None
             ) -> tuple[FetchedFile, dict]:
    """Write ``chunks`` through a sink with ``hooks``; what the hooks computed, as the engine sees it."""
    results: dict = {}
    with FileSink(tmp_path, name, f"ftp://h/{name}", {}, hooks=hooks,
                  on_finish=lambda path, computed: results.update(computed)) as sink:
        for n, chunk in enumerate(chunks):
            sink.write(chunk)
            if restart_after == n:
                sink.reset()  # a download restarted from byte 0
        return sink.finish(), results


def test_small_file_gets_sha256_and_the_md5_hook(tmp_path: Path) -> None:
    fetched, results = streamed(tmp_path, "a/b.csv", {"md5": Md5Hook()}, [b"id,x\n", b"1,2\n"])
    data = b"id,x\n1,2\n"
    assert (fetched.size, fetched.sha256) == (9, hashlib.sha256(data).hexdigest())
    assert results == {"md5": hashlib.md5(data).hexdigest()}
    assert fetched.path.read_bytes() == data


def test_md5_is_dropped_past_the_limit_and_restarts_with_the_file(tmp_path: Path) -> None:
    _, results = streamed(tmp_path, "big.bin", {"md5": Md5Hook(max_bytes=10)}, [b"x" * 8, b"y" * 8])
    assert results["md5"] is None
    fetched, results = streamed(tmp_path, "again.bin", {"md5": Md5Hook(max_bytes=10)}, [b"x" * 16, b"z" * 4],
                                restart_after=0)
    assert results["md5"] == hashlib.md5(b"zzzz").hexdigest() and fetched.size == 4


def test_without_hooks_the_sink_computes_only_the_sha256(tmp_path: Path) -> None:
    with FileSink(tmp_path, "plain.bin", "ftp://h/plain.bin", {}) as sink:
        sink.write(b"abc")
        fetched = sink.finish()
    assert fetched.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert not hasattr(fetched, "md5"), "upload details are not on the plugin types"


def parts_of(data: bytes, size: int) -> tuple[str, ...]:
    return tuple(hashlib.sha256(data[i:i + size]).hexdigest() for i in range(0, len(data), size))


@pytest.mark.parametrize("total", [99, 100, 101, 250, 300, 1000])
@pytest.mark.parametrize("chunk", [1, 7, 64, 100, 333])
def test_part_digests_are_streamed_once_the_file_reaches_the_threshold(tmp_path: Path, total: int,
                                                                        chunk: int) -> None:
    data = (bytes(range(256)) * 4)[:total]
    chunks = [data[start:start + chunk] for start in range(0, total, chunk)]
    fetched, results = streamed(tmp_path, "big.bin", {"parts": PartSha256Hook(part_size=50, from_bytes=100)}, chunks)
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    if total < 100:  # below the threshold: a single PUT, no part digests
        assert results["parts"] is None
    else:
        assert results["parts"] == (50, parts_of(data, 50))


def test_part_digests_start_over_with_the_file(tmp_path: Path) -> None:
    _, results = streamed(tmp_path, "big.bin", {"parts": PartSha256Hook(part_size=4, from_bytes=8)},
                          [b"stale bytes here", b"0123456789"], restart_after=0)
    assert results["parts"] == (4, parts_of(b"0123456789", 4))


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
