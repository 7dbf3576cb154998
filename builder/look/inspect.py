"""Show what any Linux initrd holds, read the way the kernel does (builder/formats/initrd.py walks it).

Debian's initrds (uncompressed early microcode, then the compressed main archive), NixOS's, GNU
cpio's with any codec and netbuild's own all read this way. Unlike the self-check this reader is
lenient about what the kernel accepts (the "crc" variant, GNU cpio's block padding, several
archives in one compressed stream) and strict about the rest.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.errors import NetbuildError
from builder.formats.cpio import CpioError
from builder.formats.initrd import InitrdReader, OpenMember
from builder.formats.pe import PEError, Section, read_sections
from builder.formats.streams import ByteRange, CompressionError


@dataclass(frozen=True)
class Entry:
    member: int  # index of the member holding it
    name: str
    mode: int
    size: int  # file size, or symlink target length
    target: str | None  # symlink target

    @property
    def kind(self) -> str:
        for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                           (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
                           (stat.S_ISSOCK, "socket")):
            if test(self.mode):
                return name
        return "unknown"

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"member": self.member, "mode": f"{self.mode:o}", "type": self.kind,
                                  "size": self.size, "name": self.name}
        if self.target is not None:
            doc["target"] = self.target
        return doc


@dataclass
class MemberInfo:
    index: int
    offset: int
    size: int  # bytes in the file
    compression: str  # "none" for a plain archive
    plain_size: int = 0
    entries: int = 0  # records, trailers not counted
    archives: int = 0  # cpio archives inside (usually 1)

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "offset": self.offset, "size": self.size, "compression": self.compression,
                "uncompressedSize": self.plain_size, "entries": self.entries, "archives": self.archives}


@dataclass
class Listing:
    path: str
    size: int
    members: list[MemberInfo] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    padding: int = 0  # NUL bytes between members
    uki: list[Section] | None = None  # a unified kernel image's sections (members are then its .initrd's)

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"file": self.path, "size": self.size}
        if self.uki is not None:
            doc["sections"] = [{"name": s.name, "offset": s.offset, "size": s.virtual_size,
                                "virtualAddress": s.virtual_address} for s in self.uki]
        return {**doc, "padding": self.padding, "members": [m.to_json() for m in self.members],
                "entries": [e.to_json() for e in self.entries]}


def inspect_initrd(path: Path, *, keep_entries: bool = True) -> Listing:
    """An initrd's members and entries; a unified kernel image's sections, then its .initrd's.
    keep_entries=False counts the entries without keeping them (`inspect --members`: memory stays
    flat however many an initrd holds)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; the error message needs the OSError)
    except OSError as e:
        raise NetbuildError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        sections = _uki_sections(f, path)
        source: BinaryIO | ByteRange = f
        if sections is not None:
            (section,) = [s for s in sections if s.name == ".initrd"]
            source = ByteRange(f, section.offset, section.virtual_size)  # offsets below: inside .initrd
        initrd = InitrdReader(source)
        listing = Listing(str(path), os.fstat(f.fileno()).st_size, uki=sections)
        for found in initrd:
            listing.members.append(_read_member(found, listing, path, keep_entries))
        listing.padding = initrd.padding
    if not listing.members:
        raise NetbuildError(f"{path}: empty (no archive in it)")
    return listing


def _uki_sections(f: BinaryIO, path: Path) -> list[Section] | None:
    """The sections of a unified kernel image (a PE file with .initrd), None for anything else."""
    head = f.read(1 << 16)
    f.seek(0)
    if not head.startswith(b"MZ"):
        return None
    try:
        _, sections = read_sections(head, what=str(path))
    except PEError as e:
        raise NetbuildError(str(e)) from None
    if not any(s.name == ".initrd" for s in sections):
        raise NetbuildError(f"{path}: a PE image without an .initrd section, not a unified kernel image with one")
    return sections


def _read_member(found: OpenMember, listing: Listing, path: Path, keep_entries: bool) -> MemberInfo:
    if found.codec is None:
        raise NetbuildError(f"{path}: offset {found.offset}: neither a cpio archive nor a compressed stream the "
                            f"kernel knows (starts with {found.head.hex(' ')})")
    if found.misaligned:
        raise NetbuildError(f"{path}: offset {found.offset}: a cpio archive not on a 4-byte boundary, which the "
                            "kernel takes for a compressed member and rejects (\"invalid magic\")")
    member = MemberInfo(found.index, found.offset, 0, found.codec.name)
    try:
        for archive in found.archives(accept_crc=True):
            for record in archive:
                if keep_entries:
                    target = record.data.decode("utf-8", "surrogateescape") if stat.S_ISLNK(record.mode) else None
                    listing.entries.append(Entry(member.index, record.name, record.mode, record.size, target))
                member.entries += 1
            member.archives += 1
        found.finish()
    except (CompressionError, CpioError) as e:
        raise NetbuildError(f"{path}: member {member.index} at offset {member.offset} ({member.compression}): {e}") \
            from None
    member.size, member.plain_size = found.size, found.plain_size
    return member
