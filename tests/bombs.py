"""Compression bombs for tests, built in milliseconds without expanding anything.

A raw deflate block of 1 MiB of zeros, closed by a full flush, references nothing before it:
repeating it N times (then one final empty block) is a valid stream of N MiB of zeros whose
size is about N KiB. Zips are written byte by byte so that their headers can declare any size.
"""

from __future__ import annotations

import struct
import tarfile
import zlib

__all__ = ["deflate_zeros", "raw_zip", "tar_gz_bomb", "zip_bomb"]


def deflate_zeros(mib: int, head: bytes = b"") -> bytes:
    """A raw deflate stream of ``head`` then ``mib`` MiB of zeros (about ``mib`` KiB long)."""
    start = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = start.compress(head) + start.flush(zlib.Z_FULL_FLUSH) if head else b""
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zeros.compress(bytes(1 << 20)) + zeros.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    return first + block * mib + end


def raw_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of deflated ``(name, deflate data, declared size, declared CRC)`` members."""
    body, central = b"", b""
    for name, data, size, crc in members:
        encoded = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size,
                            len(encoded), 0) + encoded + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                               len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    return body + central + end


def zip_bomb(mib: int, declared: int | None = None) -> bytes:
    """A zip of one member, ``zeros.csv``, of ``mib`` MiB of zeros; its headers declare
    ``declared`` bytes (default: the truth)."""
    size = mib << 20 if declared is None else declared
    return raw_zip([("zeros.csv", deflate_zeros(mib), size, 0)])


def tar_gz_bomb(mib: int) -> bytes:
    """A ``.tar.gz`` of one member, ``zeros.csv``, of ``mib`` MiB of zeros (its gzip trailer is
    not valid: nothing reading within a budget gets that far)."""
    header = tarfile.TarInfo("zeros.csv")
    header.size = mib << 20
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflate_zeros(mib, header.tobuf()) + bytes(8)
