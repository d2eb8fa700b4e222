"""The example plugin's LocalDirModule against the module contract suite, plus its own edges."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from module_system.contract import ModuleContract, fetch_all, make_context, resolve_source
from ms_example_plugin.localdir import LocalDirError, LocalDirModule


def seed(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class TestLocalDirContract(ModuleContract):
    @pytest.fixture
    def module_cls(self) -> type[LocalDirModule]:
        return LocalDirModule

    def make_source(self, tmp_path: Path, files: dict[str, bytes]) -> dict[str, Any]:
        seed(tmp_path, files)
        return {"path": str(tmp_path)}

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "does-not-exist")}


def module_for(**raw: Any) -> LocalDirModule:
    return LocalDirModule(resolve_source(raw, LocalDirModule.source_schema), make_context())


def test_include_and_recursive(tmp_path: Path) -> None:
    seed(tmp_path / "src", {"a.csv": b"1", "b.txt": b"2", "sub/c.csv": b"3", "sub/d.txt": b"4"})
    names = [f.name for f in fetch_all(module_for(path=str(tmp_path / "src"), include=["*.csv"]), tmp_path / "w1")]
    assert names == ["a.csv", "sub/c.csv"]
    flat = fetch_all(module_for(path=str(tmp_path / "src"), recursive=False), tmp_path / "w2")
    assert [f.name for f in flat] == ["a.csv", "b.txt"]


def test_source_uri_and_identity(tmp_path: Path) -> None:
    seed(tmp_path / "src", {"x/y.txt": b"hello"})
    [fetched] = fetch_all(module_for(path=str(tmp_path / "src")), tmp_path / "work")
    assert fetched.source_uri == (tmp_path / "src" / "x" / "y.txt").as_uri()
    assert fetched.identity["size"] == "5" and fetched.identity["mtime_ns"].isdigit()


def test_a_file_instead_of_a_folder_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(LocalDirError, match="not a folder") as info:
        fetch_all(module_for(path=str(tmp_path / "file")), tmp_path / "work")
    assert info.value.path == str(tmp_path / "file")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX symbolic links")
def test_unreadable_file_is_yielded_as_fetch_failed(tmp_path: Path) -> None:
    seed(tmp_path / "src", {"a.txt": b"a"})
    (tmp_path / "src" / "loop.txt").symlink_to("loop.txt")  # opening it fails with ELOOP, even as root
    got = fetch_all(module_for(path=str(tmp_path / "src")), tmp_path / "work")
    assert [(type(f).__name__, f.name) for f in got] == [("FetchedFile", "a.txt"), ("FetchFailed", "loop.txt")]
    assert "cannot read" in got[1].error  # type: ignore[union-attr]


def test_a_file_over_max_file_bytes_is_rejected_and_the_others_land(tmp_path: Path) -> None:
    seed(tmp_path / "src", {"big.bin": b"x" * 2000, "small.txt": b"ok"})
    ctx = dataclasses.replace(make_context(), max_file_bytes=1000)
    module = LocalDirModule(resolve_source({"path": str(tmp_path / "src")}, LocalDirModule.source_schema), ctx)
    got = fetch_all(module, tmp_path / "work")
    assert [(type(f).__name__, f.name) for f in got] == [("FetchFailed", "big.bin"), ("FetchedFile", "small.txt")]
    assert got[0].status == "rejected" and "max_file_bytes" in got[0].error  # type: ignore[union-attr]


def test_exclude_comes_from_the_template(tmp_path: Path) -> None:
    seed(tmp_path / "src", {"a.csv": b"1", "a.csv.tmp": b"2"})
    assert "exclude" in LocalDirModule.source_schema["properties"]
    got = fetch_all(module_for(path=str(tmp_path / "src"), exclude=["*.tmp"]), tmp_path / "work")
    assert [f.name for f in got] == ["a.csv"]
