"""Re-read what was written before it is published: a build that cannot be read back never reaches OUT."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from builder.errors import NetbuildError
from builder.formats.bzimage import BzImageError, read_header_file
from builder.formats.compress import CompressionError, decompress_member, detect
from builder.formats.cpio import CpioError, read_archive
from builder.writers.manifest import SUMS_NAME, file_digest


@dataclass(frozen=True)
class ExpectedInitrd:
    compression: str
    entries: int
    plain_size: int
    plain_sha256: str


def check_initrd(path: Path, expected: ExpectedInitrd) -> None:
    data = path.read_bytes()
    if expected.compression == "none":
        plain, consumed = data, len(data)
    else:
        found = detect(data[:8])
        if found != expected.compression:
            raise NetbuildError(
                f"self-check: {path.name} starts like {found or 'nothing known'}, not {expected.compression}"
            )
        try:
            plain, consumed = decompress_member(found, data)
        except CompressionError as e:
            raise NetbuildError(f"self-check: {path.name}: {e}") from None
    if consumed != len(data):
        extra = len(data) - consumed
        raise NetbuildError(f"self-check: {path.name}: {extra} unexpected bytes after the compressed member")
    if len(plain) != expected.plain_size or hashlib.sha256(plain).hexdigest() != expected.plain_sha256:
        raise NetbuildError(f"self-check: {path.name}: the archive read back differs from the one written")
    stream = io.BytesIO(plain)
    try:
        count = sum(1 for _ in read_archive(stream))
    except CpioError as e:
        raise NetbuildError(f"self-check: {path.name}: {e}") from None
    if count != expected.entries:
        raise NetbuildError(f"self-check: {path.name}: {count} entries read back, {expected.entries} written")
    if stream.read():
        raise NetbuildError(f"self-check: {path.name}: data after the archive's trailer")


def check_kernel(path: Path) -> None:
    try:
        read_header_file(path)
    except BzImageError as e:
        raise NetbuildError(f"self-check: {e}") from None


def check_sums(directory: Path) -> None:
    for line in (directory / SUMS_NAME).read_text().splitlines():
        digest, name = line.split("  ", 1)
        if file_digest(directory / name)[1] != digest:
            raise NetbuildError(f"self-check: {name} does not match its line in {SUMS_NAME}")
