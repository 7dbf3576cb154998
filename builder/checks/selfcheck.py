"""Re-read what was written before it is published: a build that cannot be read back never reaches OUT."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.errors import NetbuildError
from builder.formats.bzimage import BzImageError, read_header_file
from builder.formats.compress import CompressionError, MemberReader, detect
from builder.formats.cpio import CpioError, read_archive


@dataclass(frozen=True)
class ExpectedInitrd:
    compression: str
    entries: int
    plain_size: int
    plain_sha256: str


class _HashingReader:
    """Hashes and counts the plain stream as the cpio reader consumes it."""

    def __init__(self, source: BinaryIO | MemberReader) -> None:
        self._source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def check_initrd(path: Path, expected: ExpectedInitrd) -> None:
    """Stream the initrd back through a fresh decompressor and cpio parser, in bounded memory."""
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0)
        try:
            if expected.compression == "none":
                source: BinaryIO | MemberReader = f
            else:
                found = detect(head)
                if found != expected.compression:
                    raise NetbuildError(
                        f"self-check: {path.name} starts like {found or 'nothing known'}, not {expected.compression}"
                    )
                source = MemberReader(found, f)
            plain = _HashingReader(source)
            count = sum(1 for _ in read_archive(plain, file_data=False))  # type: ignore[arg-type]
            if plain.read(1):
                raise NetbuildError(f"self-check: {path.name}: data after the archive's trailer")
            if isinstance(source, MemberReader) and (source.trailing or f.read(1)):
                raise NetbuildError(f"self-check: {path.name}: unexpected bytes after the compressed member")
        except (CompressionError, CpioError) as e:
            raise NetbuildError(f"self-check: {path.name}: {e}") from None
    if count != expected.entries:
        raise NetbuildError(f"self-check: {path.name}: {count} entries read back, {expected.entries} written")
    if plain.size != expected.plain_size or plain.sha256.hexdigest() != expected.plain_sha256:
        raise NetbuildError(f"self-check: {path.name}: the archive read back differs from the one written")


def check_kernel(path: Path) -> None:
    try:
        read_header_file(path)
    except BzImageError as e:
        raise NetbuildError(f"self-check: {e}") from None
