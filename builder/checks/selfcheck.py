"""Re-read what was written before it is published: a build that cannot be read back never reaches OUT."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from builder.errors import NetbuildError
from builder.formats.bzimage import BzImageError, read_header_file
from builder.formats.compress import CompressionError, MemberReader, detect
from builder.formats.cpio import CpioError, read_archive
from builder.writers.members import Member


class _BoundedReader:
    """A window of the file: a member must not read into the next one."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self._f.read(size)
        self.left -= len(data)
        return data


class _HashingReader:
    """Hashes and counts the plain stream as the cpio reader consumes it."""

    def __init__(self, source: _BoundedReader | MemberReader) -> None:
        self._source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def check_initrd(path: Path, members: Sequence[Member]) -> None:
    """Stream every member back through a fresh decompressor and cpio parser, in bounded memory."""
    with open(path, "rb") as f:
        file_size = f.seek(0, 2)
        expected_offset = 0
        for index, member in enumerate(members):
            where = f"self-check: {path.name}: member {index} ({member.role}) at {member.offset}"
            if member.offset != expected_offset:
                raise NetbuildError(f"{where}: expected at {expected_offset}")
            expected_offset = member.offset + member.size
            f.seek(member.offset)
            try:
                _check_member(f, member, where)
            except (CompressionError, CpioError) as e:
                raise NetbuildError(f"{where}: {e}") from None
        if expected_offset != file_size:
            raise NetbuildError(f"self-check: {path.name}: {file_size - expected_offset} bytes after the last member")


def _check_member(f: BinaryIO, member: Member, where: str) -> None:
    window = _BoundedReader(f, member.size)
    if member.compression == "none":
        source: _BoundedReader | MemberReader = window
    else:
        head = f.read(8)
        f.seek(member.offset)
        found = detect(head)
        if found != member.compression:
            raise NetbuildError(f"{where}: starts like {found or 'nothing known'}, not {member.compression}")
        source = MemberReader(found, window)  # type: ignore[arg-type]
    plain = _HashingReader(source)
    count = sum(1 for _ in read_archive(plain, file_data=False))  # type: ignore[arg-type]
    if plain.read(1):
        raise NetbuildError(f"{where}: data after the archive's trailer")
    if isinstance(source, MemberReader) and (source.trailing or window.read(1)):
        raise NetbuildError(f"{where}: unexpected bytes after the compressed stream")
    if count != member.entries:
        raise NetbuildError(f"{where}: {count} entries read back, {member.entries} written")
    if plain.size != member.plain_size or plain.sha256.hexdigest() != member.plain_sha256:
        raise NetbuildError(f"{where}: the archive read back differs from the one written")


def check_kernel(path: Path) -> None:
    try:
        read_header_file(path)
    except BzImageError as e:
        raise NetbuildError(f"self-check: {e}") from None
