"""The codec table: every compression the kernel unpacks an initrd member from, one object each, and
the setting a build chooses (`--compress zstd:10`: a Compression).

Each codec knows its magic, the CONFIG_RD_* option that builds its decompressor into a kernel, how
to decode one member of it (all at once, or incrementally from a file) and, for the codecs netbuild
writes (zstd, gzip, xz and none), how to write one member in one call or streamed, and which
library version decides its bytes. No other module knows a codec's settings: it asks this table.

A member is exactly one stream of its codec (one zstd frame, one gzip member, one xz stream, …):
the kernel decompresses an initrd member by member and rejects anything else inside one. The
kernel-side facts are in the kernel's usr/Kconfig and lib/decompress_*.c.
"""

from __future__ import annotations

import bz2
import io
import logging
import lzma
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import zstandard

from builder.formats import CHUNK
from builder.formats.cpio import CRC_MAGIC
from builder.formats.cpio import MAGIC as CPIO_MAGIC

Buffer = bytes | bytearray | memoryview

# libarchive logs "Using external lzop program …" as a warning; that is not the user's business.
logging.getLogger("libarchive").setLevel(logging.ERROR)


class CompressionError(ValueError):
    """A bad compression spec, or compressed data that cannot be decoded. `reason` is the message
    without the codec's name in front, for callers that name the codec in their own words."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


def _error(codec: str, reason: str) -> CompressionError:
    return CompressionError(f"{codec}: {reason}", reason)


# --- what a codec is made of ------------------------------------------------------------------


class Engine(Protocol):
    """What zstandard's, zlib's and lzma's compressors have in common: compress pieces, then flush."""

    def compress(self, data: Buffer, /) -> Buffer: ...

    def flush(self) -> bytes: ...


class Decoder(Protocol):
    """What zstandard's, zlib's, lzma's and bz2's incremental decompressors have in common."""

    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes, /) -> bytes: ...


class Compressor(Protocol):
    def write(self, data: Buffer) -> None: ...

    def close(self) -> None:
        """Finish the single member and flush it to the sink."""
        ...


class PlainReader(Protocol):
    """The plain bytes of one member, read from where it starts: `consumed` (its compressed size)
    and `trailing` (what was read past its end) are known once `done`."""

    consumed: int
    trailing: bytes
    done: bool

    def read(self, size: int = -1) -> bytes: ...


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

    def decoder(self) -> Decoder:
        """A fresh incremental decoder (the codecs Python has a module for)."""
        raise _error(self.name, f"decompression not supported (only {', '.join(_DECODABLE)})")

    def reader(self, source: ByteRange | bytes) -> PlainReader:
        """An incremental reader of the one member that starts source (any codec)."""
        return MemberReader(self.name, source if isinstance(source, ByteRange) else ByteRange(source))

    def decompress(self, data: bytes) -> tuple[bytes, int]:
        """The one member at the start of data decoded at once: (plain bytes, compressed bytes it took)."""
        reader = MemberReader(self.name, io.BytesIO(data))
        plain = reader.read()
        return plain, reader.consumed


class _Inflating(Codec):
    """Written codecs whose decoder caps its output (zlib, liblzma): decode_range feeds input in
    small pieces, and only when the decoder has used what it was given, so that memory stays at the
    buffer's size however well the member compresses — a file of zeros shrinks a thousandfold."""

    def _input(self, decoder: Any, window: ByteRange) -> bytes:
        raise NotImplementedError

    def decode_range(self, window: ByteRange, buffer: bytearray) -> Iterator[memoryview]:
        view = memoryview(buffer)
        decoder: Any = self.decoder()
        try:
            while not decoder.eof:
                pending = self._input(decoder, window)
                out = decoder.decompress(pending, len(buffer))
                if out:
                    view[: len(out)] = out
                    yield view[: len(out)]
                elif not pending and not decoder.eof:
                    raise _error(self.name, "member truncated")
            if decoder.unused_data or window.read(1):
                raise _error(self.name, "bytes after the end of the member")
        except _DECODE_ERRORS as e:
            raise _error(self.name, str(e)) from None


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
        return zstandard.ZstdDecompressor().decompressobj()  # type: ignore[return-value]

    def decode_range(self, window: ByteRange, buffer: bytearray) -> Iterator[memoryview]:
        view = memoryview(buffer)
        try:
            if self.frame_size(window.read_at) != len(window):
                raise _error(self.name, "the frame does not end where the member does")
            reader = _zstd_decompressor().stream_reader(window, read_size=CHUNK, read_across_frames=False)
            while got := reader.readinto(view):
                yield view[:got]
        except zstandard.ZstdError as e:
            raise _error(self.name, str(e)) from None

    def frame_size(self, read_at: Callable[[int, int], bytes]) -> int:
        """Where the frame starting at offset 0 ends, from its block headers (RFC 8878 §3.1.1)."""
        head = read_at(0, 18)  # the largest frame header
        try:
            position = zstandard.frame_header_size(head)
            has_checksum = zstandard.get_frame_parameters(head).has_checksum
        except zstandard.ZstdError as e:
            raise _error(self.name, str(e)) from None
        while True:
            header = read_at(position, 3)
            if len(header) < 3:
                raise _error(self.name, "member truncated")
            value = int.from_bytes(header, "little")
            last, kind, block_size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise _error(self.name, "reserved block type")
            position += 3 + (1 if kind == 1 else block_size)  # an RLE block stores its byte once
            if last:
                return position + (4 if has_checksum else 0)


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
        return bz2.BZ2Decompressor()  # type: ignore[return-value]


class _Identity:
    """The none codec's engine: the plain bytes are the member."""

    def compress(self, data: Buffer, /) -> Buffer:
        return data

    def flush(self) -> bytes:
        return b""


class _None(Codec):
    """A plain cpio archive, which the kernel needs no option to read."""

    name = "none"

    def version(self) -> str:
        return "none"

    def engine(self, level: int | None, *, size: int | None = None, threads: int | None = None) -> Engine:
        return _Identity()

    def compress(self, level: int | None, plain: Buffer) -> bytes:
        return bytes(plain)

    def decode_range(self, window: ByteRange, buffer: bytearray) -> Iterator[memoryview]:
        view = memoryview(buffer)
        while got := window.readinto(view):
            yield view[:got]


# --- lz4 and lzo: the two codecs Python has no module for ---------------------------------------
#
# Their framing is simple enough to walk here, which tells where a member ends without decoding it;
# the decoding itself is left to libarchive (liblz4; for lzo, the `lzop` program, which libarchive
# runs when it was built without liblzo2, as Debian's is). netbuild reads them (`netbuild inspect`,
# a kernel's payload), never writes them.


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
    _BLOCK = 8 << 20  # uncompressed bytes per chunk of the legacy format
    _MAX_CHUNK = _BLOCK + _BLOCK // 255 + 16  # LZ4_compressBound(8 MiB)

    def member_size(self, read_at: Callable[[int, int], bytes], size: int) -> int:
        """The legacy format has no end mark: chunks (u32 size, data) follow until the data ends.
        Like the kernel, a repeated magic continues the stream; a zero or impossible chunk size is
        where it stops (NUL padding, or the next member)."""
        head = read_at(0, 4)
        if len(head) < 4:
            raise _error(self.name, "truncated in its magic")
        if head != self.magic:
            raise _error(self.name, f"not the legacy frame format (magic {self.magic.hex(' ')}), which is all the "
                                    "kernel reads")
        end = 4
        while True:
            word = read_at(end, 4)
            if len(word) < 4:
                return end
            if word == self.magic:
                end += 4
                continue
            (chunk,) = struct.unpack("<I", word)
            if chunk == 0 or chunk > self._MAX_CHUNK:
                return end
            here = end + 4
            if here + chunk > size:
                raise _error(self.name, f"truncated chunk at {here} ({chunk} bytes, {size - here} left)")
            end = here + chunk


class _Lzo(_Framed):
    name = "lzo"
    magic = bytes.fromhex("894c5a4f")
    rd_option = "CONFIG_RD_LZO"
    filter_name = "lzop"
    _FILE_MAGIC = magic + bytes.fromhex("000d0a1a0a")  # an lzop file's whole magic
    _FILTER, _EXTRA = 0x800, 0x40
    _ADLER_D, _ADLER_C, _CRC_D, _CRC_C = 0x1, 0x2, 0x100, 0x200

    def member_size(self, read_at: Callable[[int, int], bytes], size: int) -> int:
        """lzop's header (as the kernel's unlzo.c parses it), then blocks until a zero length."""
        position = 0

        def take(count: int, what: str) -> bytes:
            nonlocal position
            data = read_at(position, count)
            if len(data) != count:
                raise _error(self.name, f"truncated in {what}")
            position += count
            return data

        def u(count: int, what: str = "the header") -> int:
            return int.from_bytes(take(count, what), "big")

        if take(len(self._FILE_MAGIC), "its magic") != self._FILE_MAGIC:
            raise _error(self.name, "not an lzop file (bad magic)")
        version = u(2)
        u(2)  # library version
        if version >= 0x0940:
            u(2)  # version needed to extract
        u(1)  # method
        if version >= 0x0940:
            u(1)  # level
        flags = u(4)
        if flags & self._FILTER:
            u(4)
        u(4)  # mode
        u(4)  # mtime
        if version >= 0x0940:
            u(4)  # mtime, high half
        take(u(1), "the file name")
        u(4)  # header checksum
        if flags & self._EXTRA:
            take(u(4, "the extra field"), "the extra field")
            u(4, "the extra field")
        while True:
            plain = u(4, "a block header")
            if plain == 0:
                return position
            packed = u(4, "a block header")
            checksums = bool(flags & self._ADLER_D) + bool(flags & self._CRC_D)
            if packed < plain:
                checksums += bool(flags & self._ADLER_C) + bool(flags & self._CRC_C)
            skip = 4 * checksums + packed
            if position + skip > size:
                raise _error(self.name, "truncated in a block")
            position += skip


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


def _written(comp: Compression) -> Codec:
    """The codec of a valid setting netbuild writes."""
    if comp.name == NONE.name and comp.level is None:
        return NONE
    if comp.name not in _LEVELS or comp.level not in _LEVELS[comp.name]:
        raise CompressionError(f"compression {comp}: not a valid codec/level; choose {_CHOICES}")
    return CODECS[comp.name]


class _Stream:
    """A Compressor: one member of a codec, written to a sink as it is compressed."""

    def __init__(self, name: str, engine: Engine, sink: Callable[[Buffer], None]) -> None:
        self._name = name
        self._engine: Engine | None = engine
        self._sink = sink

    def write(self, data: Buffer) -> None:
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


def open_compressor(comp: Compression, sink: Callable[[Buffer], None], *, threads: int | None = 1,
                    size: int | None = None) -> Compressor:  # fmt: skip
    """A compressor writing one member of `comp` to sink, in pieces. threads: zstd's mode (see
    _Zstd._compressor; a number of threads never changes the output, None is the single-threaded
    mode); size: the exact plain length, when known, for the zstd frame header."""
    codec = _written(comp)
    return _Stream(codec.name, codec.engine(comp.level, size=size, threads=threads), sink)


def compress_member(comp: Compression, plain: Buffer) -> bytes:
    """The whole member for plain (which must already be complete cpio records), in one call —
    single-threaded, so that many members can be compressed at once and their bytes do not depend
    on how many."""
    return _written(comp).compress(comp.level, plain)


# --- reading one member -------------------------------------------------------------------------


class ByteRange:
    """A read-only file over source[start : start + size]: bytes, or a file read with os.pread, so
    that reading it never moves the file's own position. Read in order (read, readinto: what a
    decoder or libarchive takes, hashed into `digest` if one is given) or anywhere (read_at)."""

    def __init__(self, source: BinaryIO | Buffer | ByteRange, start: int = 0, size: int | None = None, *,
                 digest: Any = None) -> None:  # fmt: skip
        limit: Callable[[], int]
        if isinstance(source, ByteRange):
            parent = source
            start += parent._start
            self._read_at: Callable[[int, int], bytes] = parent._read_at
            limit = lambda: parent._start + len(parent)  # noqa: E731
        elif isinstance(source, bytes | bytearray | memoryview):
            data = memoryview(source)
            self._read_at = lambda offset, count: bytes(data[offset : offset + count])
            limit = lambda: len(data)  # noqa: E731
        else:
            limit, self._read_at = _file_reader(source)
        self._start = start
        self._size = max(0, limit() - start) if size is None else size
        self._position = 0
        self.digest = digest

    def __len__(self) -> int:
        return self._size

    def read_at(self, offset: int, count: int) -> bytes:
        count = max(0, min(count, self._size - offset))
        return self._read_at(self._start + offset, count) if count else b""

    def read(self, count: int = -1) -> bytes:
        count = self._size - self._position if count < 0 else count
        data = self.read_at(self._position, count)
        self._position += len(data)
        if self.digest is not None:
            self.digest.update(data)
        return data

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return False  # libarchive, zstandard: read it in order


def _file_reader(f: BinaryIO) -> tuple[Callable[[], int], Callable[[int, int], bytes]]:
    """A file's size and a read_at for it: pread on its descriptor, or seek and read (io.BytesIO)."""
    try:
        fd = f.fileno()
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        return (lambda: os.fstat(fd).st_size), (lambda offset, count: os.pread(fd, count, offset))

    def seek_read(offset: int, count: int) -> bytes:
        f.seek(offset)
        return f.read(count)

    return (lambda: f.seek(0, io.SEEK_END)), seek_read


class MemberReader:
    """Streams the plain bytes of ONE compressed member read from a binary file, in bounded memory.

    Input is fed in small pieces so that memory stays flat whatever the archive's size; once the
    member ends, `consumed` is the number of compressed bytes it occupied and `trailing` holds
    what was read past it (the start of the next member, padding or junk).
    """

    INPUT_CHUNK = 1 << 16

    def __init__(self, name: str, source: BinaryIO | ByteRange) -> None:
        codec = CODECS.get(name)
        if codec is None:
            raise _error(name, f"decompression not supported (only {', '.join(_DECODABLE)})")
        self.name = name
        self._source = source
        self._truncated = codec.truncated
        self._decoder = codec.decoder()
        self._pending = bytearray()
        self._fed = 0
        self.consumed = 0
        self.trailing = b""
        self.done = False

    def _fill(self) -> None:
        while not self._pending and not self.done:
            data = self._source.read(self.INPUT_CHUNK)
            if not data:
                raise _error(self.name, self._truncated)
            self._fed += len(data)
            try:
                self._pending += self._decoder.decompress(data)
            # bz2 reports corrupt data as OSError; lzma's "alone" decoder as LZMAError; a bad header can
            # be EOFError.
            except (*_DECODE_ERRORS, OSError, EOFError) as error:
                raise _error(self.name, str(error)) from None
            if self._decoder.eof:
                self.done = True
                self.trailing = bytes(self._decoder.unused_data)
                self.consumed = self._fed - len(self.trailing)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            chunks = []
            while chunk := self.read(CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        self._fill()
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out


class FramedMemberReader:
    """MemberReader's interface for lz4 and lzo: the member's extent comes from its framing, its
    plain bytes from libarchive reading exactly that extent."""

    def __init__(self, codec: _Framed, source: ByteRange) -> None:
        import libarchive  # imported here: only inspecting lz4/lzo initrds and kernels needs it

        self.name = codec.name
        self.consumed = codec.member_size(source.read_at, len(source))
        self.trailing = b""  # nothing past the member is read
        self.done = True
        self._libarchive_error = libarchive.ArchiveError
        # libarchive must not read into the next member: it gets exactly the member's bytes.
        window = ByteRange(source, 0, self.consumed, digest=source.digest)
        self._context: Any = libarchive.stream_reader(window, format_name="raw", filter_name=codec.filter_name)
        try:
            archive = self._context.__enter__()
            entry = next(iter(archive))
            self._blocks = iter(entry.get_blocks())
        except libarchive.ArchiveError as e:
            self.close()
            raise _error(self.name, _libarchive_reason(e)) from None
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        chunks: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        have = 0
        while have < wanted:
            if not self._pending:
                try:
                    self._pending = next(self._blocks, b"")
                except self._libarchive_error as e:
                    raise _error(self.name, _libarchive_reason(e)) from None
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


def _libarchive_reason(error: Exception) -> str:
    text = str(error)
    if "lzop" in text and ("program" in text or "exec" in text.lower()):
        return "cannot decompress: this libarchive has no LZO support and no `lzop` program is installed"
    return f"libarchive: {text}"


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
