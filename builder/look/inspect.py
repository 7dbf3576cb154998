"""Read any Linux initrd the way the kernel does (init/initramfs.c), to show what it holds.

An initrd is archives back to back: an uncompressed cpio archive starts at a multiple of 4 with
"0707"; NUL bytes between archives are skipped; anything else must start with the magic of a
codec, whose one stream may itself hold several archives separated by NULs. Debian's initrds
(uncompressed early microcode, then the compressed main archive), NixOS's, GNU cpio's with any
codec and netbuild's own all read this way. Unlike the self-check this reader is lenient about
what the kernel accepts (the "crc" variant, GNU cpio's block padding) and strict about the rest.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.errors import NetbuildError
from builder.formats.compress import CompressionError, MemberReader, detect
from builder.formats.cpio import CpioError, read_archive
from builder.formats.framed import FramedMemberReader, open_member

_SCAN = 1 << 16


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

    def to_json(self) -> dict[str, object]:
        return {"file": self.path, "size": self.size, "padding": self.padding,
                "members": [m.to_json() for m in self.members], "entries": [e.to_json() for e in self.entries]}


class _Plain:
    """The plain byte stream of a member, with look-ahead, counting the bytes taken from the source."""

    def __init__(self, source: BinaryIO | MemberReader | FramedMemberReader) -> None:
        self._source = source
        self._ahead = b""
        self.count = 0

    def _pull(self, size: int) -> bytes:
        data = self._source.read(size)
        self.count += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            data, self._ahead = self._ahead + self._pull(-1), b""
            return data
        if len(self._ahead) >= size:
            data, self._ahead = self._ahead[:size], self._ahead[size:]
            return data
        head, self._ahead = self._ahead, b""
        return head + self._pull(size - len(head))

    def peek(self) -> bytes:
        if not self._ahead:
            self._ahead = self._pull(1)
        return self._ahead[:1]

    def skip_nuls(self) -> None:
        while True:
            if not self._ahead:
                self._ahead = self._pull(_SCAN)
                if not self._ahead:
                    return
            self._ahead = self._ahead.lstrip(b"\0")
            if self._ahead:
                return


def inspect_initrd(path: Path) -> Listing:
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; the error message needs the OSError)
    except OSError as e:
        raise NetbuildError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        size = f.seek(0, 2)
        listing = Listing(str(path), size)
        offset = 0
        while offset < size:
            f.seek(offset)
            zeros = _count_nuls(f)
            if zeros:
                listing.padding += zeros
                offset += zeros
                continue
            f.seek(offset)
            member = MemberInfo(len(listing.members), offset, 0, "none")
            try:
                _read_member(f, member, listing, path)
            except (CompressionError, CpioError) as e:
                raise NetbuildError(f"{path}: member {member.index} at offset {offset} ({member.compression}): {e}") \
                    from None
            listing.members.append(member)
            offset += member.size
    if not listing.members:
        raise NetbuildError(f"{path}: empty (no archive in it)")
    return listing


def _count_nuls(f: BinaryIO) -> int:
    count = 0
    while chunk := f.read(_SCAN):
        stripped = chunk.lstrip(b"\0")
        count += len(chunk) - len(stripped)
        if stripped:
            break
    return count


def _read_member(f: BinaryIO, member: MemberInfo, listing: Listing, path: Path) -> None:
    head = f.read(8)
    f.seek(member.offset)
    codec = detect(head)
    if codec == "cpio":
        if member.offset % 4:
            raise NetbuildError(f"{path}: offset {member.offset}: a cpio archive not on a 4-byte boundary, which the "
                                "kernel takes for a compressed member and rejects (\"invalid magic\")")
        plain = _Plain(f)
        _read_archives(plain, member, listing, stop_after_one=True)
        member.size = member.plain_size = plain.count
        return
    if codec is None:
        raise NetbuildError(f"{path}: offset {member.offset}: neither a cpio archive nor a compressed stream the "
                            f"kernel knows (starts with {head.hex(' ')})")
    member.compression = codec
    reader = open_member(codec, f)
    plain = _Plain(reader)
    _read_archives(plain, member, listing, stop_after_one=False)
    member.plain_size = plain.count
    member.size = reader.consumed


def _read_archives(plain: _Plain, member: MemberInfo, listing: Listing, *, stop_after_one: bool) -> None:
    """Archives in a plain stream: for an uncompressed member, one (what follows is the next
    member); inside a compressed one, as many as there are, NUL padding between them."""
    while True:
        if not stop_after_one:
            plain.skip_nuls()
        if not plain.peek():
            return
        for entry in _entries(plain, member.index):
            listing.entries.append(entry)
            member.entries += 1
        member.archives += 1
        if stop_after_one:
            return


def _entries(plain: _Plain, index: int) -> Iterator[Entry]:
    for record in read_archive(plain, file_data=False, accept_crc=True):  # type: ignore[arg-type]
        target = record.data.decode("utf-8", "surrogateescape") if stat.S_ISLNK(record.mode) else None
        yield Entry(index, record.name, record.mode, record.size, target)
