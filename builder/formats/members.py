"""One initrd member compressed in one call, the way the kernel reads it: one zstd frame, gzip
member or xz stream holding whole cpio records.

A member's bytes depend only on its plain bytes and the codec settings — never on how many are
compressed at once — which is what lets the initrd writer compress members in parallel and cache
them: zstd runs in its single-threaded mode (its multi-threaded mode frames the output differently),
with the content size and checksum in the frame header.
"""

from __future__ import annotations

import lzma
import os
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

import zstandard

from builder.formats.compress import Compression, CompressionError

Buffer = bytes | bytearray | memoryview


def codec_version(name: str) -> str:
    """The library version that determines a codec's output bytes (part of every cache key)."""
    return {
        "zstd": f"zstd {zstandard.ZSTD_VERSION} python-zstandard {zstandard.__version__}",
        "gzip": f"zlib {zlib.ZLIB_RUNTIME_VERSION}",
        # Python does not expose liblzma's version; its own build pins the library it was built with.
        "xz": f"liblzma of Python {sys.version}",
        "none": "none",
    }[name]


def compress_member(comp: Compression, plain: Buffer) -> bytes:
    """The whole member for plain (which must already be complete cpio records)."""
    if comp.name == "none":
        return bytes(plain)
    if comp.name == "zstd":
        return _zstd(comp).compress(plain)
    if comp.name == "gzip":
        # wbits 31 = gzip wrapper; zlib writes no file name and mtime 0, like `gzip -n`.
        return zlib.compress(plain, comp.level if comp.level is not None else -1, wbits=31)
    if comp.name == "xz":
        # The kernel's xz decoder knows CRC32 and none, not xz's default CRC64.
        return lzma.compress(plain, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=comp.level)
    raise CompressionError(f"compression {comp}: not a codec the initrd writer knows")


class StreamingMember:
    """A member too large to hold in memory (one big file), compressed as it is written.

    `size` is the exact plain length, written into the zstd frame header as compress_member does.
    """

    def __init__(self, comp: Compression, size: int, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self._engine: _Engine | None
        if comp.name == "none":
            self._engine = None
        elif comp.name == "zstd":
            self._engine = _zstd(comp).compressobj(size=size)
        elif comp.name == "gzip":
            self._engine = zlib.compressobj(comp.level if comp.level is not None else -1, zlib.DEFLATED, 31)
        elif comp.name == "xz":
            self._engine = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=comp.level)
        else:
            raise CompressionError(f"compression {comp}: not a codec the initrd writer knows")

    def write(self, data: Buffer) -> None:
        out = data if self._engine is None else self._engine.compress(data)
        if out:
            self._sink(bytes(out))

    def close(self) -> None:
        if self._engine is not None:
            out = self._engine.flush()
            if out:
                self._sink(out)


def decompressed_range(
    name: str, f: BinaryIO | bytes, start: int, size: int, buffer: bytearray
) -> Iterator[memoryview]:
    """The plain bytes of the member that occupies exactly f[start : start + size] (f a file opened
    for reading, or bytes), as views of
    buffer (each valid until the next is asked for): however well the member compresses — a file
    of zeros shrinks several-thousandfold — no piece is larger than the buffer. CompressionError if
    the member is damaged, truncated, or ends before `size` bytes."""
    view = memoryview(buffer)
    window = _Range(f, start, size)
    try:
        if name == "none":
            while got := window.readinto(view):
                yield view[:got]
            return
        if name == "zstd":
            if zstd_frame_size(window.read_at) != size:
                raise CompressionError("zstd: the frame does not end where the member does")
            reader = _zstd_decompressor().stream_reader(window, read_size=1 << 20, read_across_frames=False)
            while got := reader.readinto(view):
                yield view[:got]
            return
        decoder: zlib._Decompress | lzma.LZMADecompressor
        if name == "gzip":
            decoder = zlib.decompressobj(wbits=31)
        elif name == "xz":
            decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        else:
            raise CompressionError(f"{name}: not a codec the initrd writer knows")
        while not decoder.eof:
            # Input comes in small pieces, and only when the decoder has used what it was given
            # (zlib hands back what it left, liblzma keeps it and says needs_input); output is
            # capped: memory stays at the buffer's size.
            if isinstance(decoder, lzma.LZMADecompressor):
                pending = window.read(1 << 16) if decoder.needs_input else b""
            else:
                pending = decoder.unconsumed_tail or window.read(1 << 16)
            out = decoder.decompress(pending, len(buffer))
            if out:
                view[: len(out)] = out
                yield view[: len(out)]
            elif not pending and not decoder.eof:
                raise CompressionError(f"{name}: member truncated")
        if decoder.unused_data or window.read(1):
            raise CompressionError(f"{name}: bytes after the end of the member")
    except (zstandard.ZstdError, zlib.error, lzma.LZMAError) as e:
        raise CompressionError(f"{name}: {e}") from None


def zstd_frame_size(read_at: Callable[[int, int], bytes]) -> int:
    """Where the zstd frame starting at offset 0 ends, from its block headers (RFC 8878 §3.1.1)."""
    head = read_at(0, 18)  # the largest frame header
    try:
        position = zstandard.frame_header_size(head)
        has_checksum = zstandard.get_frame_parameters(head).has_checksum
    except zstandard.ZstdError as e:
        raise CompressionError(f"zstd: {e}") from None
    while True:
        header = read_at(position, 3)
        if len(header) < 3:
            raise CompressionError("zstd: member truncated")
        value = int.from_bytes(header, "little")
        last, kind, block_size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:
            raise CompressionError("zstd: reserved block type")
        position += 3 + (1 if kind == 1 else block_size)  # an RLE block stores its byte once
        if last:
            return position + (4 if has_checksum else 0)


class _Range:
    """A read-only file over f[start : start + size] (f a file, or the bytes themselves)."""

    def __init__(self, f: BinaryIO | bytes, start: int, size: int) -> None:
        self._data = f if isinstance(f, bytes) else None
        self._fd = -1 if isinstance(f, bytes) else f.fileno()
        self._start = start
        self._size = size
        self._position = 0

    def read_at(self, offset: int, count: int) -> bytes:
        count = max(0, min(count, self._size - offset))
        if not count:
            return b""
        begin = self._start + offset
        if self._data is not None:
            return self._data[begin : begin + count]
        return os.pread(self._fd, count, begin)

    def read(self, count: int = -1) -> bytes:
        count = self._size - self._position if count < 0 else count
        data = self.read_at(self._position, count)
        self._position += len(data)
        return data

    def readinto(self, target: memoryview) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)


_contexts = threading.local()


def _zstd(comp: Compression) -> zstandard.ZstdCompressor:
    """One compressor per thread and level, reused: a level-10 context is 20 MiB to allocate and
    zero, and each compress() call starts afresh, so reuse changes no output byte."""
    cached = getattr(_contexts, "zstd", None)
    if cached is None or cached[0] != comp.level:
        compressor = zstandard.ZstdCompressor(level=comp.level or 3, write_checksum=True, write_content_size=True,
                                              threads=0)
        cached = _contexts.zstd = (comp.level, compressor)
    return cached[1]


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    """One per thread, reused: its context (and window buffer) is allocated once, not per member."""
    decompressor = getattr(_contexts, "zstd_decompressor", None)
    if decompressor is None:
        decompressor = _contexts.zstd_decompressor = zstandard.ZstdDecompressor()
    return decompressor


class _Engine(Protocol):
    def compress(self, data: Buffer, /) -> bytes: ...

    def flush(self) -> bytes: ...
