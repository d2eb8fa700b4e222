"""Archives (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``/``.tbz2``, ``.tar.xz``/``.txz``),
read member by member with a bound on what they expand to.

Validation (:mod:`common.validators`) checks each member of an archive by the rules of its
suffix, and ``unpack: true`` (:func:`unpack_members`) lands each member as a file of its
own; both read the archive through :func:`iter_members`, which streams one member at a
time (never the whole archive in memory) and counts every byte it expands against an
:class:`ExpansionBudget` (``validate.max_expanded_mb``):

* a ``.zip`` is refused before anything is read when its members *declare* more than the
  budget, and every byte actually read counts too: :mod:`zipfile` reads no more than a
  member declares and fails its CRC check when the header lies, so a header claiming
  small sizes over a huge stream is refused as well. Only stored and deflated members
  are read (:mod:`zipfile` decompresses bzip2 and LZMA members in unbounded steps); the
  others are problems;
* a tar is decompressed by the same bounded readers as a ``.gz``/``.bz2``/``.xz`` file
  (:data:`common.compression.DECOMPRESSORS`), and every byte of the tar stream (headers
  and skipped members included) counts.

A member with an unsafe name (absolute, a ``..`` segment, a drive letter), a link, a
device or FIFO, or an encrypted zip member is never read: it is a member with a
``problem``. At most :data:`MAX_MEMBERS` members are read from one archive.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from common.compression import DECOMPRESSION_ERRORS, DECOMPRESSORS
from common.file_sink import FileSink, FileTooLarge
from common.interfaces.base_module import FetchedFile, FetchFailed

__all__ = ["ARCHIVE_SUFFIXES", "MAX_MEMBERS", "ArchiveError", "ArchiveMember", "ExpansionBudget", "ExpansionLimit",
           "archive_suffix", "copy_member", "iter_members", "member_label", "unpack_members", "unsafe_member_name"]

#: Archive suffix (lower case) -> the compression of its tar stream ("" plain; "zip" a zip).
ARCHIVE_SUFFIXES: dict[str, str] = {
    ".tar.gz": ".gz", ".tgz": ".gz", ".tar.bz2": ".bz2", ".tbz2": ".bz2", ".tbz": ".bz2",
    ".tar.xz": ".xz", ".txz": ".xz", ".tar": "", ".zip": "zip",
}
#: At most this many members of one archive are read; past it the archive is refused.
MAX_MEMBERS = 100_000
_CHUNK = 1 << 16
_DRIVE = re.compile(r"^[A-Za-z]:")


class ExpansionLimit(Exception):
    """More bytes expanded than the budget allows (a possible compression bomb)."""


class ArchiveError(Exception):
    """The archive is corrupt or not what its suffix says."""


class ExpansionBudget:
    """The bytes a file may expand to, counted over every member (and nested decompression)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        """Count ``count`` more expanded bytes; raises ExpansionLimit past the limit."""
        self.used += count
        if self.used > self.limit:
            raise ExpansionLimit(self.message())

    def message(self) -> str:
        return (f"expands past validate.max_expanded_mb ({self.limit >> 20} MiB); "
                "refused as a possible compression bomb")


class _Counted:
    """A read-only stream whose reads are counted against a budget (when given) and whose read
    errors are ArchiveError naming the archive type."""

    def __init__(self, raw: IO[bytes], budget: ExpansionBudget | None, suffix: str) -> None:
        self._raw, self._budget, self._suffix = raw, budget, suffix

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(_CHUNK if size is None or size < 0 else size)
        except _READ_ERRORS as exc:
            raise _archive_error(self._suffix, exc) from None
        if self._budget is not None:
            self._budget.take(len(data))
        return data


@dataclass(frozen=True)
class ArchiveMember:
    """One member of an archive: readable (``stream``, valid until the next member is asked
    for), or not read at all, with the ``problem`` saying why."""

    name: str
    """The member's path inside the archive, as the archive gives it."""
    stream: Any = None
    """A binary stream of its content, counted against the budget; None with a problem."""
    problem: str | None = None


def archive_suffix(name: str) -> str | None:
    """The archive suffix ``name`` ends with (``".tar.gz"``, ``".zip"``...), lower case; or None."""
    lowered = name.rstrip().lower()
    for suffix in ARCHIVE_SUFFIXES:  # longer suffixes first: ".tar.gz" before ".gz"-less ".tar"
        if lowered.endswith(suffix):
            return suffix
    return None


def unsafe_member_name(name: str) -> str | None:
    """Why the member path ``name`` must not be written anywhere, or None when it is safe."""
    if not name or "\x00" in name:
        return "unsafe member name: empty or with a NUL byte"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "unsafe member name: an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "unsafe member name: a '..' segment leaves the archive"
    return None


def iter_members(path: Path, suffix: str, budget: ExpansionBudget) -> Iterator[ArchiveMember]:
    """The members of the archive at ``path`` (of kind ``suffix``, see :func:`archive_suffix`),
    one at a time, folders left out.

    Raises ExpansionLimit past the budget and ArchiveError for a corrupt archive (both may
    come from a member's ``stream`` too, while it is read).
    """
    kind = ARCHIVE_SUFFIXES[suffix]
    try:
        if kind == "zip":
            yield from _zip_members(path, budget)
        else:
            yield from _tar_members(path, suffix, budget)
    except _READ_ERRORS as exc:
        raise _archive_error(suffix, exc) from None


_READ_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, tarfile.TarError, *DECOMPRESSION_ERRORS)


def _archive_error(suffix: str, exc: BaseException) -> ArchiveError:
    return ArchiveError(f"not a valid {suffix[1:]} file: {type(exc).__name__}: {str(exc)[:200]}")


def _zip_members(path: Path, budget: ExpansionBudget) -> Iterator[ArchiveMember]:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"holds {len(infos)} members, more than {MAX_MEMBERS}; not read")
        declared = sum(info.file_size for info in infos)
        if budget.used + declared > budget.limit:
            raise ExpansionLimit(f"its members declare {declared >> 20} MiB; " + budget.message())
        for info in infos:
            if info.is_dir():
                continue
            problem = unsafe_member_name(info.filename) or _zip_special(info)
            if problem is not None:
                yield ArchiveMember(info.filename, problem=problem)
                continue
            with archive.open(info) as stream:
                yield ArchiveMember(info.filename, _Counted(stream, budget, ".zip"))


def _zip_special(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if mode & 0o170000 == 0o120000:
        return "a symbolic link: not followed"
    if info.flag_bits & 0x1:
        return "an encrypted member: not read"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return (f"compression method {info.compress_type} is not read "
                "(only stored and deflated zip members are, with bounded memory)")
    return None


def _tar_members(path: Path, suffix: str, budget: ExpansionBudget) -> Iterator[ArchiveMember]:
    compression = ARCHIVE_SUFFIXES[suffix]
    opener: Callable[..., Any] = DECOMPRESSORS[compression] if compression else open
    counted = _Counted(raw := opener(path, "rb"), budget, suffix)
    with raw, tarfile.open(fileobj=counted, mode="r|") as archive:  # type: ignore[call-overload]
        count = 0
        while (info := archive.next()) is not None:
            archive.members.clear()  # stream mode keeps every header otherwise
            if info.isdir():
                continue
            count += 1
            if count > MAX_MEMBERS:
                raise ArchiveError(f"holds more than {MAX_MEMBERS} members; not read past them")
            problem = unsafe_member_name(info.name)
            if problem is None and (info.issym() or info.islnk()):
                problem = "a link: not followed"
            elif problem is None and not info.isreg():
                problem = "not a regular file (device, FIFO...): not read"
            if problem is not None:
                yield ArchiveMember(info.name, problem=problem)
                continue
            yield ArchiveMember(info.name, _Counted(archive.extractfile(info), None, suffix))


def copy_member(member: ArchiveMember, out: Any) -> int:
    """Copy a readable member into ``out`` in fixed chunks; the bytes copied."""
    total = 0
    while chunk := member.stream.read(_CHUNK):
        out.write(chunk)
        total += len(chunk)
    return total


def member_label(archive_name: str, member: str) -> str:
    """How a problem names a member: ``a.zip!data/x.csv`` (the archive's base name)."""
    return f"{PurePosixPath(archive_name.rstrip()).name}!{member}"


def unpack_members(archive: FetchedFile, suffix: str, limit: int,
                   new_file: Callable[[str, str], FileSink]) -> Generator[FetchedFile | FetchFailed, None, None]:
    """``unpack: true``: the members of the fetched ``archive`` as files of the job, one at a time.

    A member is named ``<archive name>/<member path>`` (its key is made safe from that name like
    any other, :func:`common.safe_names.key_name`) with the source URI ``<archive URI>!<member
    path>``, and written through ``new_file(name, uri)`` (a :class:`~common.file_sink.FileSink`:
    hashed while written, ``max_file_bytes`` enforced). A member that is not read (unsafe
    name, link, a second member of the same name, larger than ``max_file_bytes``) is a
    ``FetchFailed`` with status ``rejected``, written nowhere; so is the archive itself when it
    is corrupt or expands past ``limit`` bytes (the members before stay landed).
    """
    budget = ExpansionBudget(limit)
    seen: set[str] = set()
    base = archive.name.rstrip()
    try:
        for member in iter_members(archive.path, suffix, budget):
            name, uri = f"{base}/{member.name}", f"{archive.source_uri}!{member.name}"
            if member.problem is None and member.name in seen:
                member = ArchiveMember(member.name, problem="a second member with this name: not unpacked")
            if member.problem is not None:
                yield FetchFailed(name, uri, member.problem, status="rejected")
                continue
            seen.add(member.name)
            try:
                with new_file(name, uri) as sink:
                    copy_member(member, sink)
                    fetched = sink.finish()
            except FileTooLarge as exc:
                yield FetchFailed(name, uri, str(exc), status="rejected")
                continue
            yield fetched
    except ExpansionLimit as exc:
        yield FetchFailed(archive.name, archive.source_uri, f"not unpacked further: {exc}", status="rejected")
    except ArchiveError as exc:
        yield FetchFailed(archive.name, archive.source_uri, f"not unpacked: {exc}", status="rejected")
