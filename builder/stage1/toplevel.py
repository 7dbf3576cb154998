"""The toplevel's own stage 1 (`<toplevel>/initrd`, a NixOS system's): copied byte for byte, and
described as the members it really is, so that the self-check re-reads it like everything else.

A NixOS initrd is one or more archives back to back — e.g. an uncompressed early-microcode archive,
then a compressed one — and GNU cpio, which nixpkgs packs it with, pads every archive with NULs to a
512-byte block after its trailer. The kernel skips NULs between archives and after a trailer, so
both are reported as they are: a member's plain stream may end in NULs after its trailer (counted
in its plain size and hash), and NULs may sit between members (no member covers them). The members
are found by the one initrd scanner, builder/formats/initrd.py, as the kernel finds them.

Only what netbuild can read back is accepted: plain newc cpio, zstd, gzip or xz members, each one
archive. Anything else is refused, naming the offset, rather than shipped unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import NetbuildError
from builder.formats.compress import NONE
from builder.formats.cpio import CpioError
from builder.formats.initrd import InitrdReader, Member, OpenMember
from builder.formats.streams import CompressionError

_READABLE = ("zstd", "gzip", "xz")


@dataclass(frozen=True)
class ToplevelStage1:
    store_path: str  # the initrd file, symlinks followed: /nix/store/…-initrd-linux-…/initrd
    disk: Path
    size: int
    members: list[Member]  # offsets within this file, which is copied to offset 0 of the initrd


def read_members(disk: Path, label: str) -> list[Member]:
    """The members of the initrd file at disk; label names it in errors."""
    members: list[Member] = []
    try:
        with open(disk, "rb") as f:
            # Each member is described before the next is asked for: the scanner then reads past it.
            for found in InitrdReader(f, digests=True):
                members.append(_member(found, label))
    except OSError as e:
        raise NetbuildError(f"{label}: cannot read: {e.strerror}") from None
    if not members:
        raise NetbuildError(f"{label}: empty, or only NUL bytes: not a stage 1")
    return members


def _member(found: OpenMember, label: str) -> Member:
    where = f"{label}: archive at offset {found.offset}"
    codec = found.codec
    if codec is None:
        raise NetbuildError(f"{where}: neither a cpio archive nor compressed data the kernel knows")
    if codec is NONE:
        if found.misaligned:
            raise NetbuildError(f"{where}: a plain cpio archive must start at a multiple of 4, or the kernel "
                                "rejects it")
    elif codec.name not in _READABLE:
        raise NetbuildError(
            f"{where} is {codec.name}-compressed; netbuild reads back only zstd, gzip, xz and plain cpio, "
            "so it cannot check this stage 1 (rebuild it with another compressor)"
        )
    else:
        where = f"{where} ({codec.name})"
    try:
        entries = sum(1 for _ in found.entries())
        if not found.rest_is_padding():
            raise NetbuildError(f"{where}: data after the cpio trailer inside the compressed stream "
                                "(several archives in one compressed stream are not supported)")
        return found.record("stage1", entries)
    except (CpioError, CompressionError) as e:
        raise NetbuildError(f"{where}: {e}") from None
