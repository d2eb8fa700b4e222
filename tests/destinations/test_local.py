"""The ``local`` destination on its own (``destinations/local.py``): real files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from common.exceptions import TransientUploadError, UploadError
from common.interfaces.destination import (
    DestinationSetup,
    DestinationUnusable,
    LandingFile,
)
from common.retry import RetryPolicy
from destinations.local import INDEX_DIR, LocalDestination

RETRY = RetryPolicy(attempts=1, backoff_s=0, max_backoff_s=0)


def make(tmp_path: Path, path: str = "landing", timeout_s: float = 5, **config: object) -> LocalDestination:
    setup = DestinationSetup(workers=4, timeout_s=timeout_s, state_dir=tmp_path / "state", base_dir=tmp_path)
    return LocalDestination({"path": path, "fsync": False, "link": True, **config}, setup)


def fetched(tmp_path: Path, data: bytes, name: str = "f.csv") -> LandingFile:
    path = tmp_path / "fetched" / hashlib.sha256(data).hexdigest()[:12]
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return LandingFile(path, name, len(data), hashlib.sha256(data).hexdigest(), f"file:///{name}")


def test_a_relative_path_is_under_the_registry_folder_and_check_makes_it(tmp_path: Path) -> None:
    dest = make(tmp_path, "out/landing")
    dest.check(RETRY)
    assert dest.describe() == str(tmp_path / "out" / "landing") and (tmp_path / "out" / "landing").is_dir()
    assert (tmp_path / "out" / "landing" / INDEX_DIR / "index.sqlite3").exists()


def test_put_then_skip_same_without_reading_the_source_again(tmp_path: Path) -> None:
    dest = make(tmp_path)
    file = fetched(tmp_path, b"a,b\n1,2\n")
    assert dest.put_file("p/x/f.csv", file, RETRY) == "uploaded"
    target = tmp_path / "landing" / "p" / "x" / "f.csv"
    assert target.read_bytes() == b"a,b\n1,2\n" and oct(target.stat().st_mode & 0o777) != "0o600"
    file.path.unlink()  # skip-same must not need the fetched file: the index vouches for the target
    assert dest.put_file("p/x/f.csv", file, RETRY) == "skipped_same"
    assert not list((tmp_path / "landing").rglob("*.part"))


def test_a_file_on_the_same_filesystem_is_linked_not_copied(tmp_path: Path) -> None:
    linked, copied = make(tmp_path, "linked"), make(tmp_path, "copied", link=False)
    file = fetched(tmp_path, b"x,y\n1,2\n")
    assert linked.put_file("k.csv", file, RETRY) == copied.put_file("k.csv", file, RETRY) == "uploaded"
    source, one, two = (os.stat(p) for p in (file.path, tmp_path / "linked" / "k.csv", tmp_path / "copied" / "k.csv"))
    assert one.st_ino == source.st_ino and two.st_ino != source.st_ino
    assert (tmp_path / "copied" / "k.csv").read_bytes() == b"x,y\n1,2\n"
    file.path.unlink()  # the fetched file goes: the landed one stays
    assert (tmp_path / "linked" / "k.csv").read_bytes() == b"x,y\n1,2\n"
    assert linked.put_file("k.csv", file, RETRY) == "skipped_same"
    assert not list((tmp_path / "linked").rglob("*.part"))


def test_a_target_the_index_cannot_vouch_for_is_hashed_once(tmp_path: Path) -> None:
    dest = make(tmp_path)
    target = tmp_path / "landing" / "k.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"same\n")  # someone else put it there
    file = fetched(tmp_path, b"same\n")
    assert dest.put_file("k.csv", file, RETRY) == "skipped_same"
    target.write_bytes(b"diff\n")  # same size, other content: written again
    assert dest.put_file("k.csv", file, RETRY) == "uploaded" and target.read_bytes() == b"same\n"


def test_a_copy_that_does_not_match_its_sha256_leaves_the_target_alone(tmp_path: Path) -> None:
    dest = make(tmp_path, link=False)
    old = fetched(tmp_path, b"old\n")
    dest.put_file("k.csv", old, RETRY)
    lying = LandingFile(old.path, "k.csv", 4, "0" * 64, "file:///k.csv")
    with pytest.raises(TransientUploadError, match="verification of k.csv failed"):
        dest.put_file("k.csv", lying, RETRY)
    assert (tmp_path / "landing" / "k.csv").read_bytes() == b"old\n"
    assert not list((tmp_path / "landing").rglob("*.part")), "the temp file is removed"


@pytest.mark.parametrize("key", ["../x.csv", "/abs.csv", "a/../../x.csv", f"{INDEX_DIR}/index.sqlite3", "a//b.csv",
                                 "dir/"])
def test_keys_that_leave_the_folder_are_refused(tmp_path: Path, key: str) -> None:
    dest = make(tmp_path)
    with pytest.raises(UploadError):
        dest.put_file(key, fetched(tmp_path, b"x"), RETRY)
    assert not (tmp_path / "x.csv").exists()


def test_a_symlinked_folder_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "landing").mkdir()
    os.symlink(outside, tmp_path / "landing" / "link")
    dest = make(tmp_path)
    with pytest.raises(UploadError, match="outside"):
        dest.put_file("link/sub/x.csv", fetched(tmp_path, b"x"), RETRY)
    assert list(outside.iterdir()) == []


def test_delete_owned_deletes_only_what_it_wrote_unchanged(tmp_path: Path) -> None:
    dest = make(tmp_path)
    dest.put_file("mine.csv", fetched(tmp_path, b"1\n"), RETRY)
    theirs = tmp_path / "landing" / "theirs.csv"
    theirs.write_bytes(b"2\n")
    assert dest.delete_owned("theirs.csv", RETRY) is False and theirs.exists()
    dest.put_file("changed.csv", fetched(tmp_path, b"3\n"), RETRY)
    (tmp_path / "landing" / "changed.csv").write_bytes(b"33\n")
    assert dest.delete_owned("changed.csv", RETRY) is False
    assert dest.delete_owned("mine.csv", RETRY) is True and not (tmp_path / "landing" / "mine.csv").exists()
    assert dest.delete_owned("mine.csv", RETRY) is False


def test_json_documents_round_trip_and_skip_same(tmp_path: Path) -> None:
    dest = make(tmp_path)
    assert dest.read_json("_manifests/s/j.json", RETRY) is None
    assert dest.put_json("_manifests/s/j.json", {"files": [1, 2]}, RETRY) == "uploaded"
    assert dest.put_json("_manifests/s/j.json", {"files": [1, 2]}, RETRY) == "skipped_same"
    assert dest.read_json("_manifests/s/j.json", RETRY) == {"files": [1, 2]}


def test_many_threads_put_at_once(tmp_path: Path) -> None:
    dest = make(tmp_path)
    files = [fetched(tmp_path, f"row {i}\n".encode(), f"{i}.csv") for i in range(64)]
    errors: list[BaseException] = []

    def put(chunk: list[LandingFile]) -> None:
        try:
            for f in chunk:
                assert dest.put_file(f"d/{f.name}", f, RETRY) == "uploaded"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(files[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(p.name for p in (tmp_path / "landing" / "d").iterdir()) == sorted(f.name for f in files)
    assert all(dest.put_file(f"d/{f.name}", f, RETRY) == "skipped_same" for f in files)


def test_a_path_under_a_file_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(DestinationUnusable, match="Not a directory"):
        make(tmp_path, "plain/landing").check(RETRY)


@pytest.mark.parametrize("link", [True, False])
def test_fsync_lands_the_same_files(tmp_path: Path, link: bool) -> None:
    dest = make(tmp_path, fsync=True, link=link)
    file = fetched(tmp_path, b"a\n1\n")
    assert dest.put_file("s/f.csv", file, RETRY) == "uploaded"
    assert (tmp_path / "landing" / "s" / "f.csv").read_bytes() == b"a\n1\n"
    assert dest.put_file("s/f.csv", file, RETRY) == "skipped_same"
    dest.close()


def test_an_index_that_cannot_be_written_fails_no_file_and_keeps_its_rows(tmp_path: Path) -> None:
    dest = make(tmp_path, timeout_s=0.2)  # how long a write waits for a lock another run holds
    dest.check(RETRY)
    index = tmp_path / "landing" / INDEX_DIR / "index.sqlite3"
    other_run = sqlite3.connect(index, isolation_level=None)
    other_run.execute("BEGIN IMMEDIATE")  # holds the write lock for the whole loop below
    files = [fetched(tmp_path, f"{i}\n".encode(), f"{i}.csv") for i in range(600)]  # more than a batch
    with capture_logs() as logs:
        assert {dest.put_file(f"d/{f.name}", f, RETRY) for f in files} == {"uploaded"}
        assert dest.delete_owned("d/0.csv", RETRY) is True
    warnings = [e for e in logs if e["event"] == "local_index_not_saved" and e["log_level"] == "warning"]
    assert len(warnings) == 1 and "locked" in warnings[0]["error"]
    other_run.execute("ROLLBACK")
    other_run.close()
    dest.close()  # the rows kept in memory are written now
    saved = sqlite3.connect(index)
    assert saved.execute("SELECT count(*) FROM files").fetchone() == (599,)
    assert saved.execute("SELECT count(*) FROM files WHERE key = 'd/0.csv'").fetchone() == (0,)
    saved.close()
    for f in files:
        f.path.unlink()
    again = make(tmp_path)
    assert {again.put_file(f"d/{f.name}", f, RETRY) for f in files[1:]} == {"skipped_same"}
    again.close()


def test_an_index_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    index = tmp_path / "landing" / INDEX_DIR / "index.sqlite3"
    index.parent.mkdir(parents=True)
    index.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(DestinationUnusable, match=f"cannot open the index {index}: .*delete it to rebuild"):
        make(tmp_path).check(RETRY)
    with pytest.raises(UploadError, match="cannot open the index"):  # a file fails, the job goes on
        make(tmp_path).put_file("k.csv", fetched(tmp_path, b"x"), RETRY)


def test_a_new_version_is_linked_over_the_old_one_and_a_removed_folder_is_made_again(tmp_path: Path) -> None:
    dest = make(tmp_path)
    old, new = fetched(tmp_path, b"a\n1\n"), fetched(tmp_path, b"a\n2\n")
    target = tmp_path / "landing" / "d" / "f.csv"
    assert dest.put_file("d/f.csv", old, RETRY) == "uploaded"
    assert os.stat(target).st_ino == os.stat(old.path).st_ino, "linked in place"
    assert dest.put_file("d/f.csv", new, RETRY) == "uploaded"
    assert target.read_bytes() == b"a\n2\n" and os.stat(target).st_ino == os.stat(new.path).st_ino
    assert old.path.read_bytes() == b"a\n1\n", "the old version's inode is not written through"
    assert not list((tmp_path / "landing").rglob("*.part"))

    target.unlink()
    target.parent.rmdir()  # removed by someone else after the destination last used it
    assert dest.put_file("d/g.csv", old, RETRY) == "uploaded"
    assert (target.parent / "g.csv").read_bytes() == b"a\n1\n"
    assert dest.put_file("d/f.csv", new, RETRY, skip_same=True) == "uploaded"
    assert stat_mode(target) == stat_mode(target.parent / "g.csv") != 0o600


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_the_preflight_removes_day_old_parts_at_most_once_a_day(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    (root / "d").mkdir(parents=True)
    old, fresh = root / "d" / ".a.csv.1.part", root / "d" / ".b.csv.2.part"
    for part in (old, fresh):
        part.write_bytes(b"half")
    day_ago = time.time() - 2 * 86400
    os.utime(old, (day_ago, day_ago))
    make(tmp_path).check(RETRY)
    assert not old.exists() and fresh.exists(), "a killed run's part goes once a day old, not before"

    os.utime(fresh, (day_ago, day_ago))
    make(tmp_path).check(RETRY)  # swept less than a day ago: the tree is not walked again
    assert fresh.exists()
    marker = root / INDEX_DIR / "parts-swept"
    os.utime(marker, (day_ago, day_ago))
    make(tmp_path).check(RETRY)
    assert not fresh.exists()
