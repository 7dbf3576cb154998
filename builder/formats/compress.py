"""Initrd compression: codec specs, streaming compressors the kernel can unpack, magic detection.

Every compressor writes exactly one member (one zstd frame, gzip member or xz stream): the kernel
decompresses an initrd member by member and rejects anything else inside one.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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


def _zstd_member(data: bytes) -> tuple[bytes, int]:
    # The default decompressor caps the window at 128 MiB, the kernel's own limit.
    decoder = zstandard.ZstdDecompressor().decompressobj()
    try:
        plain = decoder.decompress(data)
    except zstandard.ZstdError as error:
        raise CompressionError(f"zstd: {error}") from None
    if not decoder.eof:
        raise CompressionError("zstd: truncated frame")
    return plain, len(data) - len(decoder.unused_data)


def _gzip_member(data: bytes) -> tuple[bytes, int]:
    decoder = zlib.decompressobj(wbits=31)
    try:
        plain = decoder.decompress(data)
    except zlib.error as error:
        raise CompressionError(f"gzip: {error}") from None
    if not decoder.eof:
        raise CompressionError("gzip: truncated member")
    return plain, len(data) - len(decoder.unused_data)


def _xz_member(data: bytes) -> tuple[bytes, int]:
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        plain = decoder.decompress(data)
    except lzma.LZMAError as error:
        raise CompressionError(f"xz: {error}") from None
    if not decoder.eof:
        raise CompressionError("xz: truncated stream")
    return plain, len(data) - len(decoder.unused_data)


_MEMBER_DECODERS: dict[str, Callable[[bytes], tuple[bytes, int]]] = {
    "zstd": _zstd_member,
    "gzip": _gzip_member,
    "xz": _xz_member,
}


def decompress_member(name: str, data: bytes) -> tuple[bytes, int]:
    """Decompress the one member at the start of data: (plain bytes, compressed bytes consumed)."""
    decoder = _MEMBER_DECODERS.get(name)
    if decoder is None:
        raise CompressionError(f"{name}: decompression not supported (only {', '.join(_MEMBER_DECODERS)})")
    return decoder(data)
