"""Initrd compression: codec specs, streaming compressors the kernel can unpack, magic detection.

Every compressor writes exactly one member (one zstd frame, gzip member or xz stream): the kernel
decompresses an initrd member by member and rejects anything else inside one.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable
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
