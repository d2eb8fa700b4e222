"""What one FTP folder listing holds, and the guards of the tree walk: loops and bad names.

**Loops.** A server that follows symbolic links shows a link to a folder as a folder:
a link to the parent makes the tree infinite (two such links make it grow
exponentially), a link to a sibling shows the sibling's files twice. The walk
(:meth:`FtpModule.list_entries`) never lists a folder twice and never takes a file twice:

* by identity, when the server gives MLSD's ``unique`` fact (RFC 3659: the same value
  for the same file or folder, whatever path reaches it; pyftpdlib, vsftpd, ProFTPD
  and Pure-FTPd give it). The root's own comes from ``MLST``. The first path found
  wins: the walk goes breadth first, folders in name order, so the shallowest path to a
  folder (and the first name in a folder for a file) is the one kept;
* without ``unique`` (NLST servers), a folder whose listing (names, sizes, times of
  files; names of folders) equals that of one of its ancestors is taken for a link back
  to it and not walked. A link to a sibling cannot be told from a copy there, so its
  files are fetched under both names;
* and in every case no deeper than ``MAX_DEPTH`` folders.

**Names.** Listings are decoded as UTF-8 with ``surrogateescape``: a name that is not
valid UTF-8 (a Latin-1 server) no longer fails the listing, and the job, with
``UnicodeDecodeError``. The file is fetched by the exact bytes the server sent (commands
are encoded with ``surrogateescape`` too) and lands under a key made safe by the key rule
(``caf\\xe9.csv`` -> ``caf_~<digest>.csv``, stable across runs, distinct from
``caf_.csv``); its source URI and log lines show the bytes as ``\\xNN`` (:func:`printable`).
A folder with such a name is walked the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import structlog

__all__ = ["Listing", "LoopGuard", "parse_mlsd", "parse_mlst", "printable"]

log = structlog.get_logger(__name__)


@dataclass
class Listing:
    """One folder: ``files`` as (name, identity, unique), ``dirs`` as (name, unique)."""

    files: list[tuple[str, dict[str, str], str | None]] = field(default_factory=list)
    dirs: list[tuple[str, str | None]] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A digest of what the folder shows: equal for a folder and a link to it."""
        digest = hashlib.sha256()
        for name, identity, _ in sorted(self.files, key=lambda f: f[0]):
            digest.update(repr((name, sorted(identity.items()))).encode("utf-8", "surrogateescape"))
        for name, _ in sorted(self.dirs):
            digest.update(repr(("dir", name)).encode("utf-8", "surrogateescape"))
        return digest.hexdigest()


def parse_mlsd(entries: list[tuple[str, dict[str, str]]]) -> Listing:
    listing = Listing()
    for name, facts in entries:
        kind = facts.get("type", "").lower()
        if name in ("", ".", "..") or "/" in name:
            continue
        unique = facts.get("unique") or None
        if kind == "file":
            listing.files.append((name, {k: facts[k] for k in ("size", "modify") if k in facts}, unique))
        elif kind == "dir":
            listing.dirs.append((name, unique))
        elif kind not in ("cdir", "pdir"):
            log.debug("ftp_entry_skipped", name=printable(name), type=kind)
    return listing


def parse_mlst(reply: str) -> str | None:
    """The ``unique`` fact of an ``MLST`` reply (``250-...`` / `` facts; path`` / ``250 End``)."""
    for line in reply.splitlines()[1:]:
        facts, _, _ = line.strip().partition(" ")
        for fact in facts.split(";"):
            key, _, value = fact.partition("=")
            if key.lower() == "unique" and value:
                return value
    return None


class LoopGuard:
    """Remembers what the walk has taken: folders and files by ``unique``, listings by path."""

    def __init__(self) -> None:
        self._dirs: set[str] = set()
        self._files: set[str] = set()

    def enter(self, unique: str | None) -> bool:
        """Whether a folder with this identity is new (None: unknown, so yes); remembers it."""
        if unique is None:
            return True
        if unique in self._dirs:
            return False
        self._dirs.add(unique)
        return True

    def take_file(self, unique: str | None) -> bool:
        if unique is None:
            return True
        if unique in self._files:
            return False
        self._files.add(unique)
        return True


def printable(name: str) -> str:
    """``name`` with bytes that were not UTF-8 shown as ``\\xNN`` (for messages, URIs, logs)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
