"""One member's stream of a codec, read and written: the machinery under the codec table.

A member is exactly one stream of its codec (builder/__init__.py's glossary). Reading one: a
ByteRange is the window of a file (or of bytes) it is read from, without moving the file's own
position; a MemberReader feeds a codec's incremental decoder from it in small pieces and tells,
once the stream ends, how many bytes it took; a FramedMemberReader does the same for lz4 and lzo,
whose extent their framing tells (builder/formats/framing.py) and whose bytes libarchive decodes.
Writing one: open_compressor streams it into a sink, compress_member makes it in one call.

What each codec is — its magic, decoder, levels, engine — is the table's (builder/formats/compress.py):
these take a codec from there and know none of its settings.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from builder.formats import CHUNK, Buffer

if TYPE_CHECKING:  # the table is built on this module; its objects are only passed in
    from builder.formats.compress import Codec, Compression


# libarchive logs "Using external lzop program …" as a warning; that is not the user's business.
logging.getLogger("libarchive").setLevel(logging.ERROR)


class CompressionError(ValueError):
    """A bad compression spec, or compressed data that cannot be decoded. `reason` is the message
    without the codec's name in front, for callers that name the codec in their own words."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


def codec_error(codec: str, reason: str) -> CompressionError:
    return CompressionError(f"{codec}: {reason}", reason)


# --- what the table's codecs hand these ------------------------------------------------------


class Engine(Protocol):
    """What zstandard's, zlib's and lzma's compressors have in common: compress pieces, then flush."""

    def compress(self, data: Buffer, /) -> Buffer: ...

    def flush(self) -> bytes: ...


class Decoder(Protocol):
    """What zstandard's, zlib's, lzma's and bz2's incremental decompressors have in common."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

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


# --- reading one member -------------------------------------------------------------------------


class ByteRange:
    """A read-only file over source[start : start + size]: bytes, or a file read with os.pread, so
    that reading it never moves the file's own position. Read in order (read, readinto: what a
    decoder or libarchive takes, hashed into `digest` if one is given) or anywhere (read_at)."""

    def __init__(self, source: BinaryIO | Buffer | ByteRange, start: int = 0, size: int | None = None, *,
                 digest: Any = None) -> None:
        limit: Callable[[], int]
        if isinstance(source, ByteRange):
            parent = source
            start += parent.start
            self._read_at: Callable[[int, int], bytes] = parent._read_at
            limit = lambda: parent.start + len(parent)  # noqa: E731
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

    @property
    def start(self) -> int:
        return self._start

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


# Bounds on decompression, so that a crafted member (a "bomb") costs bounded memory and time:
OUTPUT_STEP = 1 << 20  # plain bytes one decoder call may return (each codec's decode_step caps it so)
PLAIN_FLOOR = 1 << 30  # every member may unpack to 1 GiB, and beyond that to
PLAIN_RATIO = 1024  # this many times its compressed bytes read so far (zstd packs zeros ~30000:1, real
#   initrds stay under 20:1), and never past
PLAIN_LIMIT = 64 << 30  # 64 GiB: more than any machine netboots unpacks into its tmpfs


def check_budget(codec: str, plain: int, compressed: int) -> None:
    """CompressionError once a member's plain bytes pass its budget (the bounds above)."""
    if plain > min(PLAIN_LIMIT, max(PLAIN_FLOOR, PLAIN_RATIO * compressed)):
        raise codec_error(codec, f"limit reached: {plain} bytes unpacked from {compressed} compressed (more than "
                                 f"{PLAIN_RATIO}:1 past {PLAIN_FLOOR >> 30} GiB, or {PLAIN_LIMIT >> 30} GiB): "
                                 "a decompression bomb, not an initrd")


class MemberReader:
    """Streams the plain bytes of ONE compressed member read from a binary file, in bounded memory.

    Input is fed in small pieces, and each decoder call's output is capped (OUTPUT_STEP, or
    ZSTD_INPUT for zstd), so that memory stays flat whatever the archive's size or ratio; the
    member's plain bytes are held to a budget (check_budget). Once the member ends, `consumed` is the
    number of compressed bytes it occupied and `trailing` holds what was read past it (the start of
    the next member, padding or junk).
    """

    INPUT_CHUNK = 1 << 16

    def __init__(self, codec: Codec, source: BinaryIO | ByteRange) -> None:
        self.name = codec.name
        self._source = source
        self._truncated = codec.truncated
        self._errors = codec.decode_errors
        self._codec = codec
        self._decoder: Any = codec.decoder()
        self._pending = bytearray()
        self._fed = 0
        self._plain = 0
        self.consumed = 0
        self.trailing = b""
        self.done = False

    def _step(self) -> bytes:
        """One decoder call, its output capped by the codec (Codec.decode_step); b"" with no input
        left means truncation."""
        return self._codec.decode_step(self._decoder, self._read)

    def _read(self, count: int) -> bytes:
        data = self._source.read(count)
        self._fed += len(data)
        return data

    def _fill(self) -> None:
        while not self._pending and not self.done:
            fed = self._fed
            try:
                out = self._step()
            except self._errors as error:
                raise codec_error(self.name, str(error)) from None
            if not out and fed == self._fed and not self._decoder.eof:
                raise codec_error(self.name, self._truncated)
            self._plain += len(out)
            check_budget(self.name, self._plain, self._fed)
            self._pending += out
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


class Framed(Protocol):
    """A codec whose member's extent its framing tells (lz4's legacy frame, lzo's lzop file)."""

    name: str
    filter_name: str  # libarchive's name for it

    def member_size(self, read_at: Callable[[int, int], bytes], size: int) -> int: ...


class FramedMemberReader:
    """MemberReader's interface for lz4 and lzo: the member's extent comes from its framing, its
    plain bytes from libarchive reading exactly that extent."""

    def __init__(self, codec: Framed, source: ByteRange) -> None:
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
            raise codec_error(self.name, _libarchive_reason(e)) from None
        self._pending = b""
        self._plain = 0

    def read(self, size: int = -1) -> bytes:
        chunks: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        have = 0
        while have < wanted:
            if not self._pending:
                try:
                    self._pending = next(self._blocks, b"")
                except self._libarchive_error as e:
                    raise codec_error(self.name, _libarchive_reason(e)) from None
                if not self._pending:
                    self.close()
                    break
            piece, self._pending = self._pending[: wanted - have], self._pending[wanted - have :]
            chunks.append(piece)
            have += len(piece)
            self._plain += len(piece)
            check_budget(self.name, self._plain, self.consumed)
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


def capped_range(codec: Codec, decoder: Any, window: ByteRange, buffer: bytearray,
                 next_input: Callable[[Any, ByteRange], bytes],
                 errors: tuple[type[Exception], ...]) -> Iterator[memoryview]:
    """The plain bytes of the member that fills window exactly, through a decoder that caps its
    output (zlib's, liblzma's), as views of buffer: input is fed in small pieces (next_input), and
    only when the decoder has used what it was given, so that memory stays at the buffer's size
    however well the member compresses — a file of zeros shrinks a thousandfold. `errors`: what the
    decoder raises for data it cannot decode."""
    view = memoryview(buffer)
    try:
        while not decoder.eof:
            pending = next_input(decoder, window)
            out = decoder.decompress(pending, len(buffer))
            if out:
                view[: len(out)] = out
                yield view[: len(out)]
            elif not pending and not decoder.eof:
                raise codec_error(codec.name, "member truncated")
        if decoder.unused_data or window.read(1):
            raise codec_error(codec.name, "bytes after the end of the member")
    except errors as e:
        raise codec_error(codec.name, str(e)) from None


# --- writing one member -----------------------------------------------------------------------


class Identity:
    """The none codec's engine: the plain bytes are the member."""

    def compress(self, data: Buffer, /) -> Buffer:
        return data

    def flush(self) -> bytes:
        return b""


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
                    size: int | None = None) -> Compressor:
    """A compressor writing one member of `comp` to sink, in pieces. threads: zstd's mode (see
    the table's zstd codec; a number of threads never changes the output, None is the
    single-threaded mode); size: the exact plain length, when known, for the zstd frame header."""
    codec = comp.written()
    return _Stream(codec.name, codec.engine(comp.level, size=size, threads=threads), sink)


def compress_member(comp: Compression, plain: Buffer) -> bytes:
    """The whole member for plain (which must already be complete cpio records), in one call —
    single-threaded, so that many members can be compressed at once and their bytes do not depend
    on how many."""
    return comp.written().compress(comp.level, plain)
