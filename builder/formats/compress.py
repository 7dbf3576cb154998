"""Initrd compression: codec specs, streaming compressors the kernel can unpack, magic detection.

Every compressor writes exactly one member (one zstd frame, gzip member or xz stream): the kernel
decompresses an initrd member by member and rejects anything else inside one.
"""

from __future__ import annotations

import bz2
import io
import logging
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard


class CompressionError(ValueError):
    """A bad compression spec, or compressed data that cannot be decoded."""


@dataclass(frozen=True)
class Compression:
    name: str  # 'zstd' | 'gzip' | 'xz' | 'none'
    level: int | None  # None for 'none'

    def __str__(self) -> str:
        return self.name if self.level is None else f"{self.name}:{self.level}"


DEFAULT_LEVELS = {"zstd": 10, "gzip": 9, "xz": 6}
# zstd stops at 19: the "ultra" levels 20..22 use windows up to 128 MiB+ and need more memory than
# early boot should spend; 1..19 keep the window at 8 MiB or less, well inside the kernel's 128 MiB.
LEVEL_RANGES = {"zstd": range(1, 20), "gzip": range(1, 10), "xz": range(10)}
NAMES = (*DEFAULT_LEVELS, "none")
_CHOICES = "zstd[:1-19], gzip[:1-9], xz[:0-9] or none"


def parse_compression(spec: str) -> Compression:
    """'zstd', 'zstd:19', 'gzip:6', 'xz:9', 'none' -> Compression (default level when none is given)."""
    name, colon, level_text = spec.strip().partition(":")
    if name == "none":
        if colon:
            raise CompressionError(f"compression {spec!r}: 'none' takes no level; choose {_CHOICES}")
        return Compression("none", None)
    if name not in LEVEL_RANGES:
        raise CompressionError(f"compression {spec!r}: unknown codec {name!r}; choose {_CHOICES}")
    if not colon:
        return Compression(name, DEFAULT_LEVELS[name])
    levels = LEVEL_RANGES[name]
    if not level_text.isdigit() or int(level_text) not in levels:
        allowed = f"{levels.start}..{levels.stop - 1}"
        raise CompressionError(f"compression {spec!r}: {name} level must be {allowed}; choose {_CHOICES}")
    return Compression(name, int(level_text))


class Compressor(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Finish the single member and flush it to the sink."""
        ...


class _StreamCompressor:
    """Adapts any object with compress()/flush() (zstd, zlib, lzma) to Compressor."""

    def __init__(self, name: str, engine: _Engine, sink: Callable[[bytes], None]) -> None:
        self._name = name
        self._engine: _Engine | None = engine
        self._sink = sink

    def write(self, data: bytes) -> None:
        if self._engine is None:
            raise CompressionError(f"{self._name}: write after close")
        out = self._engine.compress(data)
        if out:
            self._sink(out)

    def close(self) -> None:
        if self._engine is None:
            return
        engine, self._engine = self._engine, None
        out = engine.flush()
        if out:
            self._sink(out)


class _Engine(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Passthrough:
    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise CompressionError("none: write after close")
        if data:
            self._sink(data)

    def close(self) -> None:
        self._closed = True


def open_compressor(comp: Compression, sink: Callable[[bytes], None], *, threads: int = 1) -> Compressor:
    """A compressor writing one member of `comp` to sink. threads only affects zstd, never its output."""
    if comp.name == "none":
        return _Passthrough(sink)
    if comp.level is None or comp.name not in LEVEL_RANGES or comp.level not in LEVEL_RANGES[comp.name]:
        raise CompressionError(f"compression {comp}: not a valid codec/level; choose {_CHOICES}")
    engine: _Engine
    if comp.name == "zstd":
        # Always the multi-threaded mode, even for one worker: its output is the same for any worker
        # count, whereas threads=0 (single-threaded mode) produces different bytes. Reproducible builds.
        compressor = zstandard.ZstdCompressor(level=comp.level, write_checksum=True, threads=max(1, threads))
        engine = compressor.compressobj()
    elif comp.name == "gzip":
        # wbits 31 = gzip wrapper; zlib writes no file name and mtime 0, like `gzip -n`.
        engine = zlib.compressobj(comp.level, zlib.DEFLATED, 31)
    else:
        # The kernel's xz decoder knows CRC32 and none, not xz's default CRC64.
        engine = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=comp.level)
    return _StreamCompressor(comp.name, engine, sink)


MAGICS: dict[str, bytes] = {
    "zstd": bytes.fromhex("28b52ffd"),
    "gzip": bytes.fromhex("1f8b"),
    "xz": bytes.fromhex("fd377a585a00"),
    "lz4": bytes.fromhex("02214c18"),  # the legacy frame, the only lz4 format the kernel reads
    "lzma": bytes.fromhex("5d00"),  # weak: just the usual properties byte and a small dictionary
    "bzip2": bytes.fromhex("425a68"),
    "lzo": bytes.fromhex("894c5a4f"),
}
_CPIO_MAGICS = (b"070701", b"070702")


def detect(head: bytes) -> str | None:
    """The codec whose magic starts head, 'cpio' for an uncompressed newc/crc archive, else None."""
    if head.startswith(_CPIO_MAGICS):
        return "cpio"
    # Longest magics first so a short one can never shadow a longer, more specific one.
    for name, magic in sorted(MAGICS.items(), key=lambda item: -len(item[1])):
        if head.startswith(magic):
            return name
    return None


class _Decoder(Protocol):
    """What zstandard's, zlib's and lzma's incremental decompressors have in common."""

    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


def _decoder(name: str) -> _Decoder:
    if name == "zstd":
        # The default decompressor caps the window at 128 MiB, the kernel's own limit.
        return zstandard.ZstdDecompressor().decompressobj()  # type: ignore[return-value]
    if name == "gzip":
        return zlib.decompressobj(wbits=31)
    if name == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if name == "lzma":
        # The kernel's "lzma" is the legacy .lzma ("alone") format: 13-byte header, then the stream.
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    if name == "bzip2":
        return bz2.BZ2Decompressor()  # type: ignore[return-value]
    raise CompressionError(f"{name}: decompression not supported (only {', '.join(_DECODABLE)})")


_DECODABLE = ("zstd", "gzip", "xz", "lzma", "bzip2")
# bz2 reports corrupt data as OSError; lzma's "alone" decoder as LZMAError; a bad header can be EOFError.
_DECODE_ERRORS = (zstandard.ZstdError, zlib.error, lzma.LZMAError, OSError, EOFError)
_TRUNCATED = {
    "zstd": "truncated frame", "gzip": "truncated member", "xz": "truncated stream", "lzma": "truncated stream",
    "bzip2": "truncated stream",
}  # fmt: skip


class MemberReader:
    """Streams the plain bytes of ONE compressed member read from a binary file, in bounded memory.

    Input is fed in small pieces so that memory stays flat whatever the archive's size; once the
    member ends, `consumed` is the number of compressed bytes it occupied and `trailing` holds
    what was read past it (the start of the next member, padding or junk).
    """

    INPUT_CHUNK = 1 << 16

    def __init__(self, name: str, source: BinaryIO) -> None:
        self.name = name
        self._source = source
        self._decoder = _decoder(name)
        self._pending = bytearray()
        self._fed = 0
        self.consumed = 0
        self.trailing = b""
        self.done = False

    def _fill(self) -> None:
        while not self._pending and not self.done:
            data = self._source.read(self.INPUT_CHUNK)
            if not data:
                raise CompressionError(f"{self.name}: {_TRUNCATED[self.name]}")
            self._fed += len(data)
            try:
                self._pending += self._decoder.decompress(data)
            except _DECODE_ERRORS as error:
                raise CompressionError(f"{self.name}: {error}") from None
            if self._decoder.eof:
                self.done = True
                self.trailing = bytes(self._decoder.unused_data)
                self.consumed = self._fed - len(self.trailing)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        self._fill()
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out


def decompress_member(name: str, data: bytes) -> tuple[bytes, int]:
    """Decompress the one member at the start of data: (plain bytes, compressed bytes consumed)."""
    reader = MemberReader(name, io.BytesIO(data))
    plain = reader.read()
    return plain, reader.consumed


# --- lz4 (legacy frame) and lzo (lzop file format): the two kernel codecs Python has no module for.
#
# Their framing is simple enough to walk here, which tells where a member ends without decoding
# it; the decoding itself is left to libarchive (liblz4; for lzo, the `lzop` program, which
# libarchive runs when it was built without liblzo2, as Debian's is).

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
