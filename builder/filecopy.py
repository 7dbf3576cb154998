"""Byte ranges of files: copied between files inside the kernel (copy_range), read in chunks
(read_range), or hashed (sha256_of, for the writers' read-back checks).

shutil.copyfileobj copies whole files through a user-space buffer; the initrd is assembled from
ranges of other files (cached segments, spooled ones), 300 MB of them for a large closure, so the
copy uses copy_file_range(2) — no user-space copy, and a reflink on filesystems that share extents
— with read/write as the fallback where the kernel refuses (another filesystem on some kernels, an
old kernel) or there is no file descriptor (a BytesIO in tests).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from builder.formats import CHUNK

_FALLBACK_ERRORS = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def copy_range(src: BinaryIO, src_offset: int, size: int, dest: BinaryIO) -> int:
    """Append src[src_offset : src_offset + size] to dest at its current position; return bytes
    copied (less than size only if src is shorter). dest's position ends after the copy."""
    try:
        dest_fd = dest.fileno()
        src_fd = src.fileno()
    except (io.UnsupportedOperation, AttributeError):
        return _copy_by_reading(src, src_offset, size, dest)
    dest.flush()
    if src.writable():
        src.flush()  # the kernel sees only what is in the file
    position = dest.seek(0, os.SEEK_CUR)
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src_fd, dest_fd, size - copied, src_offset + copied, position + copied)
            if n == 0:
                break
            copied += n
    except OSError as e:
        if e.errno not in _FALLBACK_ERRORS or copied:
            raise
        dest.seek(position)
        return _copy_by_reading(src, src_offset, size, dest)
    dest.seek(position + copied)
    return copied


def read_range(f: BinaryIO, size: int) -> Iterator[bytes]:
    """The next `size` bytes of f, in chunks of at most CHUNK; EOFError if f ends before them."""
    while size:
        chunk = f.read(min(size, CHUNK))
        if not chunk:
            raise EOFError(f"{size} bytes short")
        yield chunk
        size -= len(chunk)


def _copy_by_reading(src: BinaryIO, src_offset: int, size: int, dest: BinaryIO) -> int:
    src.seek(src_offset)
    buffer = bytearray(min(CHUNK, max(size, 1)))
    view = memoryview(buffer)
    copied = 0
    while copied < size:
        # Every file opened in binary mode has readinto; typing's BinaryIO does not declare it.
        got = src.readinto(view[: min(len(buffer), size - copied)])  # type: ignore[attr-defined]
        if not got:
            break
        dest.write(view[:got])
        copied += got
    return copied


def sha256_of(source: Path | bytes) -> str:
    """The hex sha256 of bytes or of a file's contents, read in CHUNKs."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    h = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
