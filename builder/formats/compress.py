"""The codec table: every compression the kernel unpacks an initrd member from, one object each, and
the setting a build chooses (`--compress zstd:10`: a Compression).

Each codec knows its magic, the CONFIG_RD_* option that builds its decompressor into a kernel, how
to decode one member of it (all at once, or incrementally from a file) and, for the codecs netbuild
writes (zstd, gzip, xz and none), how to write one member in one call or streamed, and which
library version decides its bytes. No other module knows a codec's settings (test_codec_table.py
checks): they ask this table. Reading and writing one member's stream is builder/formats/streams.py;
finding where a member ends from its framing alone, builder/formats/framing.py.

A member is exactly one stream of its codec (one zstd frame, one gzip member, one xz stream, …):
the kernel decompresses an initrd member by member and rejects anything else inside one. The
kernel-side facts are in the kernel's usr/Kconfig and lib/decompress_*.c.
"""

from __future__ import annotations

import bz2
import io
import lzma
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from builder.formats import CHUNK, Buffer
from builder.formats.cpio import CRC_MAGIC
from builder.formats.cpio import MAGIC as CPIO_MAGIC
from builder.formats.framing import lz4_legacy_size, lzo_size, zstd_frame_size
from builder.formats.streams import (
    OUTPUT_STEP,
    ByteRange,
    CompressionError,
    Decoder,
    Engine,
    FramedMemberReader,
    Identity,
    MemberReader,
    PlainReader,
    capped_range,
)
from builder.formats.streams import codec_error as _error

# --- what a codec is made of ------------------------------------------------------------------

# The libraries' own errors for data they cannot decode.
_DECODE_ERRORS = (zstandard.ZstdError, zlib.error, lzma.LZMAError)


class Codec:
    """One codec of the table. A codec netbuild only reads has no levels; one it writes overrides
    the writing methods."""

    name: str
    magic: bytes = b""  # how a member of it starts; none has none: its member starts as a cpio archive
    rd_option: str | None = None  # CONFIG_RD_*: the kernel can unpack it only with this set
    truncated: str = "truncated stream"  # what a member of it that ends early is called
    levels: range | None = None  # the levels netbuild writes it at; None: netbuild does not
    default_level: int | None = None
    # What its decoder raises for data it cannot decode: the libraries' own errors; bz2 reports
    # corrupt data as OSError, lzma's "alone" decoder as LZMAError, a bad header can be EOFError.
    decode_errors: tuple[type[Exception], ...] = (*_DECODE_ERRORS, OSError, EOFError)

    def __repr__(self) -> str:
        return f"<codec {self.name}>"

    # writing (zstd, gzip, xz, none)

    def version(self) -> str:
        """The library version that decides the codec's output bytes (part of every cache key)."""
        raise _error(self.name, "not a codec netbuild writes")

    def engine(self, level: int | None, *, size: int | None = None, threads: int | None = None) -> Engine:
        """A compressor of one member, fed in pieces: see `open_compressor`."""
        raise _error(self.name, "not a codec netbuild writes")

    def compress(self, level: int | None, plain: Buffer) -> bytes:
        """One whole member, in one call."""
        raise _error(self.name, "not a codec netbuild writes")

    def decode_range(self, window: ByteRange, buffer: bytearray) -> Iterator[memoryview]:
        """The plain bytes of the member that fills window exactly, in pieces no larger than buffer."""
        raise _error(self.name, "not a codec the initrd writer knows")

    # reading (every codec)

    def decode_step(self, decoder: Any, read: Callable[[int], bytes]) -> bytes:
        """One call of decoder, fed by read(n), returning at most about streams.OUTPUT_STEP bytes
        (a decompression bomb must not fill memory in one call); b"" once read gives nothing more.
        This default suits liblzma and libbz2, which keep the input they did not use yet."""
        data = read(1 << 16) if decoder.needs_input else b""
        if not data and decoder.needs_input:
            return b""
        return bytes(decoder.decompress(data, OUTPUT_STEP))

    def decoder(self) -> Decoder:
        """A fresh incremental decoder (the codecs Python has a module for)."""
        raise _error(self.name, f"decompression not supported (only {', '.join(_DECODABLE)})")

    def reader(self, source: ByteRange | bytes) -> PlainReader:
        """An incremental reader of the one member that starts source (any codec)."""
        return MemberReader(self, source if isinstance(source, ByteRange) else ByteRange(source))

    def decompress(self, data: bytes) -> tuple[bytes, int]:
        """The one member at the start of data decoded at once: (plain bytes, compressed bytes it took)."""
        reader = MemberReader(self, io.BytesIO(data))
        plain = reader.read()
        return plain, reader.consumed


class _Inflating(Codec):
    """Written codecs whose decoder caps its output (zlib, liblzma): see streams.capped_range."""

    def _input(self, decoder: Any, window: ByteRange) -> bytes:
        raise NotImplementedError

    def decode_range(self, window: ByteRange, buffer: bytearray) -> Iterator[memoryview]:
        return capped_range(self, self.decoder(), window, buffer, self._input, _DECODE_ERRORS)


_contexts = threading.local()


class _Zstd(Codec):
    name = "zstd"
    magic = bytes.fromhex("28b52ffd")
    rd_option = "CONFIG_RD_ZSTD"  # kernel 5.9 and later; the frame's window must be 128 MiB or less
    truncated = "truncated frame"
    # zstd stops at 19: the "ultra" levels 20..22 use windows up to 128 MiB+ and need more memory than
    # early boot should spend; 1..19 keep the window at 8 MiB or less, well inside the kernel's 128 MiB.
    levels = range(1, 20)
    default_level = 10
    # The frame header holds the content size (when known) and the frame ends in its checksum.
    _SETTINGS: dict[str, Any] = {"write_checksum": True, "write_content_size": True}  # noqa: RUF012

    def version(self) -> str:
        return f"zstd {zstandard.ZSTD_VERSION} python-zstandard {zstandard.__version__}"

    def _compressor(self, level: int | None, threads: int | None) -> zstandard.ZstdCompressor:
        """The one zstd threading policy. zstd has two modes, each deterministic on its own, that
        frame the same input differently: single-threaded (threads=0) and multi-threaded (threads ≥ 1,
        whose bytes are the same for any number of workers). So that the number of cores never
        changes a byte, a member is compressed in the mode its caller names, never in one a thread
        count picks: threads=None (the initrd writer, which compresses many members at once, one per
        thread) is the single-threaded mode, with one context per thread and level reused — a
        level-10 context is 20 MiB to allocate and zero, and every member starts afresh in it; a
        number (one member compressed on several cores) is the multi-threaded mode, one worker at
        least, even when asked for 0."""
        level = level if level is not None else self.default_level
        if threads is not None:
            return zstandard.ZstdCompressor(level=level, threads=max(1, threads), **self._SETTINGS)
        cached = getattr(_contexts, "zstd", None)
        if cached is None or cached[0] != level:
            cached = _contexts.zstd = (level, zstandard.ZstdCompressor(level=level, threads=0, **self._SETTINGS))
        return cached[1]

    def engine(self, level: int | None, *, size: int | None = None, threads: int | None = None) -> Engine:
        compressor = self._compressor(level, threads)
        # size, when known, goes into the frame header, as compress() puts it there.
        return compressor.compressobj() if size is None else compressor.compressobj(size=size)

    def compress(self, level: int | None, plain: Buffer) -> bytes:
        return self._compressor(level, None).compress(plain)

    def decoder(self) -> Decoder:
        # The default decompressor caps the window at 128 MiB, the kernel's own limit.
        return zstandard.ZstdDecompressor().decompressobj()

    # zstandard's decompressobj takes no max_length; a block of at most 128 KiB needs at least 4
    # input bytes, so 1 KiB in bounds one call's output at 32 MiB.
    _BOUNDED_INPUT = 1024

    def decode_step(self, decoder: Any, read: Callable[[int], bytes]) -> bytes:
        data = read(self._BOUNDED_INPUT)
        return bytes(decoder.decompress(data)) if data else b""

    def decode_range(self, window: ByteRange, buffer: bytearray) -> Iterator[memoryview]:
        view = memoryview(buffer)
        try:
            if self.frame_size(window.read_at) != len(window):
                raise _error(self.name, "the frame does not end where the member does")
            # A ByteRange reads like a file (read, readinto), which is all stream_reader asks of one.
            reader = _zstd_decompressor().stream_reader(window, read_size=CHUNK,  # type: ignore[arg-type]
                                                        read_across_frames=False)
            while got := reader.readinto(view):
                yield view[:got]
        except zstandard.ZstdError as e:
            raise _error(self.name, str(e)) from None

    def frame_size(self, read_at: Callable[[int, int], bytes]) -> int:
        """Where the frame starting at offset 0 ends, from its block headers (RFC 8878 §3.1.1)."""
        return zstd_frame_size(self.name, read_at)


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    """One per thread, reused: its context (and window buffer) is allocated once, not per member."""
    decompressor = getattr(_contexts, "zstd_decompressor", None)
    if decompressor is None:
        decompressor = _contexts.zstd_decompressor = zstandard.ZstdDecompressor()
    return decompressor


class _Gzip(_Inflating):
    name = "gzip"
    magic = bytes.fromhex("1f8b")
    rd_option = "CONFIG_RD_GZIP"
    truncated = "truncated member"
    levels = range(1, 10)
    default_level = 9
    _WBITS = 31  # the gzip wrapper; zlib writes no file name and mtime 0, like `gzip -n`

    def version(self) -> str:
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION}"

    def engine(self, level: int | None, *, size: int | None = None, threads: int | None = None) -> Engine:
        return zlib.compressobj(level if level is not None else -1, zlib.DEFLATED, self._WBITS)

    def compress(self, level: int | None, plain: Buffer) -> bytes:
        return zlib.compress(plain, level if level is not None else -1, wbits=self._WBITS)

    def decoder(self) -> Decoder:
        return zlib.decompressobj(wbits=self._WBITS)

    def decode_step(self, decoder: Any, read: Callable[[int], bytes]) -> bytes:
        data = decoder.unconsumed_tail or read(1 << 16)  # zlib hands back what it did not use
        return bytes(decoder.decompress(data, OUTPUT_STEP)) if data else b""

    def _input(self, decoder: Any, window: ByteRange) -> bytes:
        return decoder.unconsumed_tail or window.read(1 << 16)  # zlib hands back what it left


class _Xz(_Inflating):
    name = "xz"
    magic = bytes.fromhex("fd377a585a00")
    rd_option = "CONFIG_RD_XZ"
    levels = range(10)
    default_level = 6
    # The kernel's xz decoder knows the CRC32 check and none, not xz's default CRC64.
    _SETTINGS: dict[str, Any] = {"format": lzma.FORMAT_XZ, "check": lzma.CHECK_CRC32}  # noqa: RUF012

    def version(self) -> str:
        # Python does not expose liblzma's version; its own build pins the library it was built with.
        return f"liblzma of Python {sys.version}"

    def engine(self, level: int | None, *, size: int | None = None, threads: int | None = None) -> Engine:
        return lzma.LZMACompressor(preset=level, **self._SETTINGS)

    def compress(self, level: int | None, plain: Buffer) -> bytes:
        return lzma.compress(plain, preset=level, **self._SETTINGS)

    def decoder(self) -> Decoder:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def _input(self, decoder: Any, window: ByteRange) -> bytes:
        return window.read(1 << 16) if decoder.needs_input else b""  # liblzma keeps what it left


class _Lzma(Codec):
    name = "lzma"
    magic = bytes.fromhex("5d00")  # weak: just the usual properties byte and a small dictionary
    rd_option = "CONFIG_RD_LZMA"

    def decoder(self) -> Decoder:
        # The kernel's "lzma" is the legacy .lzma ("alone") format: 13-byte header, then the stream.
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)


class _Bzip2(Codec):
    name = "bzip2"
    magic = bytes.fromhex("425a68")
    rd_option = "CONFIG_RD_BZIP2"

    def decoder(self) -> Decoder:
        return bz2.BZ2Decompressor()


class _None(Codec):
    """A plain cpio archive, which the kernel needs no option to read."""

    name = "none"

    def version(self) -> str:
        return "none"

    def engine(self, level: int | None, *, size: int | None = None, threads: int | None = None) -> Engine:
        return Identity()

    def compress(self, level: int | None, plain: Buffer) -> bytes:
        return bytes(plain)

    def decode_range(self, window: ByteRange, buffer: bytearray) -> Iterator[memoryview]:
        view = memoryview(buffer)
        while got := window.readinto(view):
            yield view[:got]


# --- lz4 and lzo: the two codecs Python has no module for ---------------------------------------
#
# Their framing is simple enough to walk (builder/formats/framing.py), which tells where a member
# ends without decoding it; the decoding itself is left to libarchive (liblz4; for lzo, the `lzop`
# program, which libarchive runs when it was built without liblzo2, as Debian's is). netbuild
# reads them (`netbuild inspect`, a kernel's payload), never writes them.


class _Framed(Codec):
    filter_name: str  # libarchive's name for it

    def member_size(self, read_at: Callable[[int, int], bytes], size: int) -> int:
        """Bytes of the member at offset 0 of `size` bytes, found from its framing alone."""
        raise NotImplementedError

    def reader(self, source: ByteRange | bytes) -> PlainReader:
        return FramedMemberReader(self, source if isinstance(source, ByteRange) else ByteRange(source))


class _Lz4Legacy(_Framed):
    name = "lz4"
    magic = bytes.fromhex("02214c18")  # the legacy frame (`lz4 -l`), the only lz4 format the kernel reads
    rd_option = "CONFIG_RD_LZ4"
    filter_name = "lz4"

    def member_size(self, read_at: Callable[[int, int], bytes], size: int) -> int:
        return lz4_legacy_size(self.name, self.magic, read_at, size)


class _Lzo(_Framed):
    name = "lzo"
    magic = bytes.fromhex("894c5a4f")  # the start of an lzop file's magic
    rd_option = "CONFIG_RD_LZO"
    filter_name = "lzop"

    def member_size(self, read_at: Callable[[int, int], bytes], size: int) -> int:
        return lzo_size(self.name, self.magic, read_at, size)


# --- the table ----------------------------------------------------------------------------------

ZSTD, GZIP, XZ, LZMA, BZIP2, LZ4, LZO, NONE = (_Zstd(), _Gzip(), _Xz(), _Lzma(), _Bzip2(), _Lz4Legacy(), _Lzo(),
                                               _None())
CODECS: dict[str, Codec] = {c.name: c for c in (ZSTD, GZIP, XZ, LZMA, BZIP2, LZ4, LZO, NONE)}
WRITTEN = (ZSTD, GZIP, XZ, NONE)  # the codecs netbuild writes, in its order of preference
_LEVELLED = tuple(c for c in WRITTEN if c.levels is not None)
_DECODABLE = ("zstd", "gzip", "xz", "lzma", "bzip2")  # the codecs with a Python decoder
# Views of the table, by codec name.
DEFAULT_LEVELS = {c.name: c.default_level for c in _LEVELLED}
MAGICS = {c.name: c.magic for c in CODECS.values() if c.magic}


def detect(head: bytes) -> str | None:
    """The codec whose magic starts head, 'cpio' for an uncompressed newc/crc archive, else None."""
    if head.startswith((CPIO_MAGIC, CRC_MAGIC)):
        return "cpio"
    # Longest magics first so a short one can never shadow a longer, more specific one.
    for name, magic in sorted(MAGICS.items(), key=lambda item: -len(item[1])):
        if head.startswith(magic):
            return name
    return None


def codec_version(name: str) -> str:
    return CODECS[name].version()


# --- the setting a build chooses ----------------------------------------------------------------


@dataclass(frozen=True)
class Compression:
    name: str  # 'zstd' | 'gzip' | 'xz' | 'none'
    level: int | None  # None for 'none'

    def __str__(self) -> str:
        return self.name if self.level is None else f"{self.name}:{self.level}"

    @property
    def codec(self) -> Codec:
        return CODECS[self.name]

    def written(self) -> Codec:
        """The codec of this setting, if it is a valid one netbuild writes."""
        if self.name == NONE.name and self.level is None:
            return NONE
        if self.name not in _LEVELS or self.level not in _LEVELS[self.name]:
            raise CompressionError(f"compression {self}: not a valid codec/level; choose {_CHOICES}")
        return CODECS[self.name]


_LEVELS = {c.name: c.levels for c in _LEVELLED if c.levels is not None}
_CHOICES = ", ".join(f"{name}[:{levels.start}-{levels.stop - 1}]" for name, levels in _LEVELS.items()) + " or none"


def parse_compression(spec: str) -> Compression:
    """'zstd', 'zstd:19', 'gzip:6', 'xz:9', 'none' -> Compression (default level when none is given)."""
    name, colon, level_text = spec.strip().partition(":")
    if name == NONE.name:
        if colon:
            raise CompressionError(f"compression {spec!r}: 'none' takes no level; choose {_CHOICES}")
        return Compression(NONE.name, None)
    if name not in _LEVELS:
        raise CompressionError(f"compression {spec!r}: unknown codec {name!r}; choose {_CHOICES}")
    if not colon:
        return Compression(name, DEFAULT_LEVELS[name])
    levels = _LEVELS[name]
    if not level_text.isdigit() or int(level_text) not in levels:
        allowed = f"{levels.start}..{levels.stop - 1}"
        raise CompressionError(f"compression {spec!r}: {name} level must be {allowed}; choose {_CHOICES}")
    return Compression(name, int(level_text))


def decompressed_range(
    name: str, f: BinaryIO | bytes, start: int, size: int, buffer: bytearray
) -> Iterator[memoryview]:
    """The plain bytes of the member that occupies exactly f[start : start + size] (f a file opened
    for reading, or bytes), as views of buffer (each valid until the next is asked for): however
    well the member compresses, no piece is larger than the buffer. CompressionError if the member
    is damaged, truncated, or ends before `size` bytes."""
    codec = CODECS.get(name)
    if codec is None:
        raise _error(name, "not a codec the initrd writer knows")
    return codec.decode_range(ByteRange(f, start, size), buffer)
