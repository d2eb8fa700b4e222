"""The built-in ``local`` source: the contract suite, links that leave the folder, files still
being written, a file changing while it is copied; and a CLI run."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from module_system import FetchFailed
from module_system.contract import ModuleContract, make_context, resolve_source
from modules.local_module.main import LocalModule


def seed(root: Path, files: dict[str, bytes], age_s: float = 60) -> None:
    then = time.time() - age_s
    for name, data in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (then, then))


class TestLocalContract(ModuleContract):
    @pytest.fixture
    def module_cls(self) -> type[LocalModule]:
        return LocalModule

    def make_source(self, tmp_path: Path, files: dict[str, bytes]) -> dict[str, Any]:
        seed(tmp_path, files)
        return {"path": str(tmp_path)}

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "does-not-exist")}


def names(module: LocalModule) -> list[str]:
    return [e.name for e in module.list_entries()]


def module_for(**raw: Any) -> LocalModule:
    return LocalModule(resolve_source(raw, LocalModule.source_schema), make_context())


def test_links_inside_are_read_links_outside_are_left_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    seed(root, {"a.csv": b"a", "sub/b.csv": b"b"})
    seed(outside, {"secret.txt": b"s", "dir/x.csv": b"x"})
    os.symlink(root / "a.csv", root / "link-in.csv")
    os.symlink(outside / "secret.txt", root / "link-out.txt")
    os.symlink(outside / "dir", root / "dir-out")
    os.symlink(root / "sub", root / "sub-again")
    assert names(module_for(path=str(root))) == ["a.csv", "link-in.csv", "sub-again/b.csv", "sub/b.csv"]
    assert names(module_for(path=str(root), follow_symlinks=False)) == ["a.csv", "sub/b.csv"]


def test_files_still_being_written_are_left_for_the_next_run(tmp_path: Path) -> None:
    seed(tmp_path, {"old.csv": b"1"})
    (tmp_path / "fresh.csv").write_bytes(b"2")  # modified just now
    assert names(module_for(path=str(tmp_path), min_age_s=30)) == ["old.csv"]
    assert names(module_for(path=str(tmp_path), min_age_s=0)) == ["fresh.csv", "old.csv"]


def test_a_file_that_changes_while_copied_is_retried_then_fails(tmp_path: Path) -> None:
    seed(tmp_path, {"grow.csv": b"x" * (64 << 20)})
    module = module_for(path=str(tmp_path))
    [entry] = list(module.list_entries())
    done = threading.Event()

    def writer() -> None:  # another program keeps appending to the file
        with open(entry.handle, "ab") as out:
            while not done.is_set():
                out.write(b"more")
                out.flush()
                time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = module.fetch_entry(entry, tmp_path / "work")
    finally:
        done.set()
        thread.join()
    assert isinstance(result, FetchFailed) and "changed while it was read" in result.error, result
