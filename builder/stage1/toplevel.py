"""The toplevel's own stage 1 (`<toplevel>/initrd`, a NixOS system's): copied byte for byte, and
described as the members it really is, so that the self-check re-reads it like everything else.

A NixOS initrd is one or more archives back to back — e.g. an uncompressed early-microcode archive,
then a compressed one — and GNU cpio, which nixpkgs packs it with, pads every archive with NULs to a
512-byte block after its trailer. The kernel skips NULs between archives and after a trailer, so
both are reported as they are: a member's plain stream may end in NULs after its trailer (counted
in its plain size and hash), and NULs may sit between members (no member covers them).

Only what netbuild can read back is accepted: plain newc cpio, zstd, gzip or xz members, each one
archive. Anything else is refused, naming the offset, rather than shipped unchecked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.errors import NetbuildError
from builder.formats.compress import CompressionError, MemberReader, detect
from builder.formats.cpio import CpioError, read_archive
from builder.writers.members import Member

_CHUNK = 1 << 16
_READABLE = ("zstd", "gzip", "xz")


@dataclass(frozen=True)
class ToplevelStage1:
    store_path: str  # the initrd file, symlinks followed: /nix/store/…-initrd-linux-…/initrd
    disk: Path
    size: int
    members: list[Member]  # offsets within this file, which is copied to offset 0 of the initrd


class _Window:
    """Reads a file from a start offset, hashing and counting what passes (for plain members)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _skip_nuls(f: BinaryIO, offset: int, end: int) -> int:
    """The offset of the first non-NUL byte at or after offset (end if there is none)."""
    f.seek(offset)
    while offset < end:
        chunk = f.read(min(_CHUNK, end - offset))
        stripped = chunk.lstrip(b"\0")
        offset += len(chunk) - len(stripped)
        if stripped:
            return offset
    return end


def read_members(disk: Path, label: str) -> list[Member]:
    """The members of the initrd file at disk; label names it in errors."""
    members: list[Member] = []
    try:
        with open(disk, "rb") as f:
            end = f.seek(0, 2)
            offset = _skip_nuls(f, 0, end)
            while offset < end:
                f.seek(offset)
                kind = detect(f.read(8))
                f.seek(offset)
                where = f"{label}: archive at offset {offset}"
                if kind == "cpio":
                    member = _plain_member(f, offset, where)
                elif kind in _READABLE:
                    member = _compressed_member(f, offset, kind, where)
                elif kind is not None:
                    raise NetbuildError(
                        f"{where} is {kind}-compressed; netbuild reads back only zstd, gzip, xz and plain cpio, "
                        "so it cannot check this stage 1 (rebuild it with another compressor)"
                    )
                else:
                    raise NetbuildError(f"{where}: neither a cpio archive nor compressed data the kernel knows")
                members.append(member)
                offset = _skip_nuls(f, member.offset + member.size, end)
    except OSError as e:
        raise NetbuildError(f"{label}: cannot read: {e.strerror}") from None
    if not members:
        raise NetbuildError(f"{label}: empty, or only NUL bytes: not a stage 1")
    return members


def _plain_member(f: BinaryIO, offset: int, where: str) -> Member:
    if offset % 4:
        raise NetbuildError(f"{where}: a plain cpio archive must start at a multiple of 4, or the kernel rejects it")
    window = _Window(f)
    try:
        entries = sum(1 for _ in read_archive(window, file_data=False))  # type: ignore[arg-type]
    except CpioError as e:
        raise NetbuildError(f"{where}: {e}") from None
    return Member(role="stage1", offset=offset, size=window.size, compression="none",
                  plain_size=window.size, plain_sha256=window.sha256.hexdigest(), entries=entries)


class _Plain:
    """The decompressed stream of one member, hashed and counted as it is read."""

    def __init__(self, reader: MemberReader) -> None:
        self._reader = reader
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _compressed_member(f: BinaryIO, offset: int, kind: str, where: str) -> Member:
    reader = MemberReader(kind, f)
    plain = _Plain(reader)
    try:
        entries = sum(1 for _ in read_archive(plain, file_data=False))  # type: ignore[arg-type]
        while chunk := plain.read(_CHUNK):
            if chunk.strip(b"\0"):
                raise NetbuildError(
                    f"{where} ({kind}): data after the cpio trailer inside the compressed stream "
                    "(several archives in one compressed stream are not supported)"
                )
    except (CpioError, CompressionError) as e:
        raise NetbuildError(f"{where} ({kind}): {e}") from None
    return Member(role="stage1", offset=offset, size=reader.consumed, compression=kind,
                  plain_size=plain.size, plain_sha256=plain.sha256.hexdigest(), entries=entries)
