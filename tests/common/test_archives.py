"""Archives read member by member within an expansion budget (common/archives.py), and checked
member by member by a service's rules (common/validators)."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from common.archives import (
    ArchiveError,
    ExpansionBudget,
    ExpansionLimit,
    archive_suffix,
    copy_member,
    iter_members,
    unsafe_member_name,
)
from common.config_model import CsvRules, ValidateConfig
from common.validators import ValidatorSet
from tests.bombs import tar_gz_bomb, zip_bomb

GOOD = b"id,amount\n1,2.5\n"
BAD = b"id,amount\n1,2.5\n2,lots\n"
RULES = CsvRules(("id", "amount"), {"id": "int", "amount": "float"}, ",", True)


def validators(limit_mb: int = 1, on_unchecked: str = "reject") -> ValidatorSet:
    return ValidatorSet(ValidateConfig(None, None, RULES, None, max_expanded_bytes=limit_mb << 20,
                                       on_unchecked=on_unchecked))  # type: ignore[arg-type]


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return path


def contents(path: Path, suffix: str, limit: int = 1 << 20) -> list[tuple[str, bytes | str]]:
    out: list[tuple[str, bytes | str]] = []
    for member in iter_members(path, suffix, ExpansionBudget(limit)):
        if member.problem:
            out.append((member.name, member.problem))
        else:
            buffer = io.BytesIO()
            copy_member(member, buffer)
            out.append((member.name, buffer.getvalue()))
    return out


@pytest.mark.parametrize(("name", "suffix"), [
    ("a.zip", ".zip"), ("a.TAR.GZ", ".tar.gz"), ("a.tgz", ".tgz"), ("a.tar.bz2", ".tar.bz2"), ("a.tar.xz", ".tar.xz"),
    ("a.tar", ".tar"), ("a.csv.gz", None), ("a.csv", None)])
def test_archive_suffix(name: str, suffix: str | None) -> None:
    assert archive_suffix(name) == suffix


@pytest.mark.parametrize("name", ["../x.csv", "a/../../x.csv", "/etc/passwd", "C:/x.csv", "a\\..\\x.csv", ""])
def test_unsafe_member_names(name: str) -> None:
    assert unsafe_member_name(name) is not None


def test_safe_member_names() -> None:
    assert unsafe_member_name("data/x..csv") is None
    assert unsafe_member_name("a/b/c.csv") is None


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz"), ("w", ".tar")])
def test_tar_members_stream_one_by_one(tmp_path: Path, mode: str, suffix: str) -> None:
    path = write_tar(tmp_path / f"a{suffix}", [("x.csv", GOOD), ("d/y.csv", BAD)], mode)
    assert contents(path, suffix) == [("x.csv", GOOD), ("d/y.csv", BAD)]


def test_zip_members_and_unsafe_ones_are_problems_not_reads(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.csv", GOOD)
        archive.writestr("../up.csv", GOOD)
        archive.writestr("/abs.csv", GOOD)
        link = zipfile.ZipInfo("link.csv")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
        archive.writestr("folder/", b"")
    found = dict(contents(path, ".zip"))
    assert found["x.csv"] == GOOD
    assert "'..'" in str(found["../up.csv"])
    assert "absolute" in str(found["/abs.csv"])
    assert "symbolic link" in str(found["link.csv"])
    assert "folder/" not in found


def test_tar_links_and_devices_are_problems(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as archive:
        for name, kind in (("sym.csv", tarfile.SYMTYPE), ("hard.csv", tarfile.LNKTYPE), ("fifo", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            archive.addfile(info)
    found = dict(contents(path, ".tar"))
    assert "link" in str(found["sym.csv"]) and "link" in str(found["hard.csv"])
    assert "not a regular file" in str(found["fifo"])


def test_zip_declaring_more_than_the_budget_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    path.write_bytes(zip_bomb(64))  # 64 MiB of zeros, ~64 KB packed, declared honestly
    with pytest.raises(ExpansionLimit, match="declare 64 MiB"):
        contents(path, ".zip")


def test_zip_whose_header_lies_is_refused_without_expanding(tmp_path: Path) -> None:
    path = tmp_path / "liar.zip"
    path.write_bytes(zip_bomb(64, declared=100))  # says 100 bytes, holds 64 MiB
    with pytest.raises(ArchiveError, match="Bad CRC-32"):
        contents(path, ".zip")


def test_tar_gz_bomb_stops_at_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(tar_gz_bomb(64))
    budget = ExpansionBudget(2 << 20)
    with pytest.raises(ExpansionLimit, match="compression bomb"):
        for member in iter_members(path, ".tar.gz", budget):
            copy_member(member, io.BytesIO())
    assert budget.used <= (2 << 20) + (1 << 16), "read no more than one chunk past the budget"


def test_corrupt_archives_are_archive_errors(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "x.tar.gz").write_bytes(gzip.compress(b"not a tar header" * 40))
    for name, suffix in (("x.zip", ".zip"), ("x.tar.gz", ".tar.gz")):
        with pytest.raises(ArchiveError, match="not a valid"):
            contents(tmp_path / name, suffix)


# ---------------------------------------------------------------------------- validation


def test_zip_members_are_checked_by_their_own_rules_with_member_locations(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/x.csv", BAD)
        archive.writestr("ok.csv", GOOD)
        archive.writestr("inner.csv.gz", gzip.compress(BAD))
        archive.writestr("notes.txt", "hello")
        archive.writestr("../evil.csv", GOOD)
    problems = validators().check_path(path, "in/a.zip", ExpansionBudget(1 << 20))
    assert problems is not None
    located = {(p.location, p.message.split(":")[0]) for p in problems}
    assert located == {
        ("a.zip!data/x.csv row 3, column 'amount'", "not a valid float"),
        ("a.zip!inner.csv.gz row 3, column 'amount'", "not a valid float"),
        ("a.zip!notes.txt", "not checked"),
        ("a.zip!../evil.csv", "unsafe member name"),
    }


def test_members_no_rule_checks_pass_under_accept_and_an_archive_of_only_those_is_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.csv", GOOD)
        archive.writestr("notes.txt", "hello")
    assert validators(on_unchecked="accept").check_path(path, "a.zip", ExpansionBudget(1 << 20)) == []
    only = tmp_path / "b.zip"
    with zipfile.ZipFile(only, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert validators(on_unchecked="accept").check_path(only, "b.zip", ExpansionBudget(1 << 20)) is None


def test_archive_bombs_are_rejected_with_the_reason(tmp_path: Path) -> None:
    for name, body in (("bomb.zip", zip_bomb(64)), ("liar.zip", zip_bomb(64, declared=10)),
                       ("bomb.tar.gz", tar_gz_bomb(64))):
        (tmp_path / name).write_bytes(body)
        [problem] = validators(limit_mb=1).check_path(tmp_path / name, name, ExpansionBudget(1 << 20)) or [None]
        assert problem is not None and problem.location == name
        assert ("compression bomb" in problem.message) or ("Bad CRC-32" in problem.message), problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.tar.gz", "bomb.zip", "liar.zip"], "no temp file left"


def test_members_share_one_budget(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "a.tar.gz", [(f"{i}.csv", b"id,amount\n" + b"1,2\n" * 100_000) for i in range(4)])
    problems = validators(limit_mb=1).check_path(path, "a.tar.gz", ExpansionBudget(1 << 20))
    assert problems and "compression bomb" in problems[-1].message
