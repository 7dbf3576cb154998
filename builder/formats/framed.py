"""lz4 (legacy frame) and lzo (lzop file format): the two kernel codecs Python has no module for,
and `open_member`, a reader for a member of any codec the kernel knows (`netbuild inspect`).

Their framing is simple enough to walk here, which tells where a member ends without decoding
it; the decoding itself is left to libarchive (liblz4; for lzo, the `lzop` program, which
libarchive runs when it was built without liblzo2, as Debian's is).
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterator
from typing import BinaryIO

from builder.formats.compress import MAGICS, CompressionError, MemberReader

FRAMED = ("lz4", "lzo")
_LZ4_LEGACY_MAGIC = 0x184C2102
_LZ4_LEGACY_BLOCK = 8 << 20  # uncompressed bytes per chunk of the legacy format
_LZ4_MAX_CHUNK = _LZ4_LEGACY_BLOCK + _LZ4_LEGACY_BLOCK // 255 + 16  # LZ4_compressBound(8 MiB)
_LZOP_MAGIC = MAGICS["lzo"] + bytes.fromhex("000d0a1a0a")
_LZOP_FILTER, _LZOP_EXTRA = 0x800, 0x40
_LZOP_ADLER_D, _LZOP_ADLER_C, _LZOP_CRC_D, _LZOP_CRC_C = 0x1, 0x2, 0x100, 0x200

# libarchive logs "Using external lzop program …" as a warning; that is not the user's business.
logging.getLogger("libarchive").setLevel(logging.ERROR)


def _read_exact(f: BinaryIO, count: int, name: str, what: str) -> bytes:
    data = f.read(count)
    if len(data) != count:
        raise CompressionError(f"{name}: truncated in {what}")
    return data


def framed_member_size(name: str, f: BinaryIO) -> int:
    """Bytes of the lz4 or lzo member that starts at f's position, found from its framing alone;
    f is left where it was."""
    start = f.tell()
    try:
        if name == "lz4":
            return _lz4_legacy_size(f, start)
        if name == "lzo":
            return _lzop_size(f, start)
        raise CompressionError(f"{name}: not a framed codec ({', '.join(FRAMED)})")
    finally:
        f.seek(start)


def _lz4_legacy_size(f: BinaryIO, start: int) -> int:
    """The legacy format has no end mark: chunks (u32 size, data) follow until the data ends.
    Like the kernel, a repeated magic continues the stream; a zero or impossible chunk size is
    where it stops (NUL padding, or the next member)."""
    if struct.unpack("<I", _read_exact(f, 4, "lz4", "its magic"))[0] != _LZ4_LEGACY_MAGIC:
        raise CompressionError("lz4: not the legacy frame format (magic 02 21 4c 18), which is all the kernel reads")
    end = start + 4
    while True:
        word = f.read(4)
        if len(word) < 4:
            return end
        (chunk,) = struct.unpack("<I", word)
        if chunk == _LZ4_LEGACY_MAGIC:
            end += 4
            continue
        if chunk == 0 or chunk > _LZ4_MAX_CHUNK:
            return end
        here = end + 4
        size = f.seek(0, io.SEEK_END)
        if here + chunk > size:
            raise CompressionError(f"lz4: truncated chunk at {here - start} ({chunk} bytes, {size - here} left)")
        end = here + chunk
        f.seek(end)


def _lzop_size(f: BinaryIO, start: int) -> int:
    """lzop's header (as the kernel's unlzo.c parses it), then blocks until a zero length."""

    def u(count: int, what: str) -> int:
        return int.from_bytes(_read_exact(f, count, "lzo", what), "big")

    if _read_exact(f, len(_LZOP_MAGIC), "lzo", "its magic") != _LZOP_MAGIC:
        raise CompressionError("lzo: not an lzop file (bad magic)")
    version = u(2, "the header")
    u(2, "the header")  # library version
    if version >= 0x0940:
        u(2, "the header")  # version needed to extract
    u(1, "the header")  # method
    if version >= 0x0940:
        u(1, "the header")  # level
    flags = u(4, "the header")
    if flags & _LZOP_FILTER:
        u(4, "the header")
    u(4, "the header")  # mode
    u(4, "the header")  # mtime
    if version >= 0x0940:
        u(4, "the header")  # mtime, high half
    _read_exact(f, u(1, "the header"), "lzo", "the file name")
    u(4, "the header")  # header checksum
    if flags & _LZOP_EXTRA:
        _read_exact(f, u(4, "the extra field"), "lzo", "the extra field")
        u(4, "the extra field")
    while True:
        plain = u(4, "a block header")
        if plain == 0:
            return f.tell() - start
        packed = u(4, "a block header")
        checksums = bool(flags & _LZOP_ADLER_D) + bool(flags & _LZOP_CRC_D)
        if packed < plain:
            checksums += bool(flags & _LZOP_ADLER_C) + bool(flags & _LZOP_CRC_C)
        _read_exact(f, 4 * checksums + packed, "lzo", "a block")


class _Window:
    """At most `size` bytes of f from its position: libarchive must not read into the next member."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.left = size

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")[: self.left]
        count = self._f.readinto(view)  # type: ignore[attr-defined]
        self.left -= count
        return count

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self._f.read(size)
        self.left -= len(data)
        return data


class FramedMemberReader:
    """MemberReader's interface for lz4 and lzo: the member's extent comes from its framing, its
    plain bytes from libarchive reading exactly that extent. `f` must be seekable."""

    def __init__(self, name: str, f: BinaryIO) -> None:
        import libarchive  # imported here: only inspecting lz4/lzo initrds and kernels needs it

        self.name = name
        self.consumed = framed_member_size(name, f)
        self.trailing = b""  # nothing past the member is read
        self.done = True
        self._end = f.tell() + self.consumed
        self._f = f
        window = _Window(f, self.consumed)
        filter_name = "lz4" if name == "lz4" else "lzop"
        self._context = libarchive.stream_reader(window, format_name="raw", filter_name=filter_name)
        try:
            archive = self._context.__enter__()
            entry = next(iter(archive))
            self._blocks = iter(entry.get_blocks())
        except libarchive.ArchiveError as e:
            self.close()
            raise CompressionError(f"{name}: {_libarchive_reason(e)}") from None
        self._pending = b""
        self._libarchive_error = libarchive.ArchiveError

    def read(self, size: int = -1) -> bytes:
        chunks: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        have = 0
        while have < wanted:
            if not self._pending:
                try:
                    self._pending = next(self._blocks, b"")
                except self._libarchive_error as e:
                    raise CompressionError(f"{self.name}: {_libarchive_reason(e)}") from None
                if not self._pending:
                    self.close()
                    break
            piece, self._pending = self._pending[: wanted - have], self._pending[wanted - have :]
            chunks.append(piece)
            have += len(piece)
        return b"".join(chunks)

    def close(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)
            self._f.seek(self._end)


def _libarchive_reason(error: Exception) -> str:
    text = str(error)
    if "lzop" in text and ("program" in text or "exec" in text.lower()):
        return "cannot decompress: this libarchive has no LZO support and no `lzop` program is installed"
    return f"libarchive: {text}"


def open_member(name: str, f: BinaryIO) -> MemberReader | FramedMemberReader:
    """A reader of the plain bytes of the one member of codec `name` starting at f's position,
    for every codec the kernel knows (lz4 and lzo need a seekable f)."""
    return FramedMemberReader(name, f) if name in FRAMED else MemberReader(name, f)


def decompress_all(name: str, data: bytes) -> Iterator[bytes]:
    """The plain bytes of the one member at the start of data, in pieces (for a kernel payload)."""
    reader = open_member(name, io.BytesIO(data))
    while chunk := reader.read(1 << 20):
        yield chunk
