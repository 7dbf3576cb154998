"""Frames: the members of the whole-store initrd as the writer cuts them from a group — whole newc
archives of at most FRAME_TARGET plain bytes, each compressed in one call and checked at once
(decompressed anew, compared with the archive, and its records parsed), so that the build's
self-check need only confirm the file holds the bytes checked here.

An entry never spans two members (the kernel requires whole records in each); an entry too large
for one member gets a member of its own, compressed straight into the segment file as it is read.
A frame does not depend on where it will sit in the initrd: that is what lets the cache reuse it.

The module is named after what it makes rather than after what it cuts: the glossary's frame
(builder/__init__.py) is a member just cut, compressed and checked, before it has an offset; only
the initrd writer, placing it, describes it as a Member (builder/formats/initrd.py), and a cache
entry's meta lists its "frames". (Not a zstd frame, which is that codec's stream.)

Memory: each thread fills one plain buffer, reused from member to member. Allocating a fresh 16 MiB
buffer per member costs a page fault per 4 KiB touched (1.5 s of system time for a 700 MB closure
on a small virtual machine), and letting malloc recycle such blocks fragments the heap.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from builder.errors import NetbuildError
from builder.formats import CHUNK, Buffer
from builder.formats.compress import Compression, decompressed_range
from builder.formats.cpio import HEADER_SIZE, TRAILER_NAME, CpioError, CpioWriter, read_archive
from builder.formats.streams import CompressionError, compress_member, open_compressor

FRAME_TARGET = 16 << 20  # plain bytes per member at most; a larger file is streamed (about 15% slower)


@dataclass(frozen=True)
class Frame:
    """One finished, checked member, described before it has a place in the initrd."""

    size: int
    plain_size: int
    plain_sha256: str
    entries: int
    sha256: str

    def describe(self) -> dict[str, Any]:
        return {"size": self.size, "plain_size": self.plain_size, "plain_sha256": self.plain_sha256,
                "entries": self.entries, "sha256": self.sha256}


def entry_size(name: bytes, data_size: int) -> int:
    header = HEADER_SIZE + len(name) + 1
    return header + (-header % 4) + data_size + (-data_size % 4)


_TRAILER_SIZE = entry_size(TRAILER_NAME.encode(), 0)
_local = threading.local()


class _PlainBuffer:
    """One member's archive, in this thread's buffer (kept between members: see the docstring)."""

    def __init__(self) -> None:
        buffer = getattr(_local, "plain", None)
        if buffer is None:
            buffer = _local.plain = bytearray()
        self.buffer: bytearray = buffer
        self.size = 0

    def write(self, data: Buffer) -> None:
        end = self.size + len(data)
        self.buffer[self.size : end] = data  # grows the buffer only the first time
        self.size = end

    def view(self) -> memoryview:
        return memoryview(self.buffer)[: self.size]


def _scratch() -> bytearray:
    """This thread's buffer for decompressed pieces, reused."""
    buffer = getattr(_local, "scratch", None)
    if buffer is None:
        buffer = _local.scratch = bytearray(CHUNK)
    return buffer


class _MemoryReader:
    """read() over a buffer without copying it whole; skip_exactly() moves without copying."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._position + size)
        out = bytes(self._view[self._position : end])
        self._position = end
        return out

    def skip_exactly(self, size: int) -> int:
        done = min(size, len(self._view) - self._position)
        self._position += done
        return done

    def tell(self) -> int:
        return self._position


def _failed(comp: Compression, e: Exception) -> NetbuildError:
    return NetbuildError(f"self-check: a {comp.name} member failed to read back: {e}")


def _check(comp: Compression, source: BinaryIO | bytes, start: int, size: int, plain: memoryview,
           entries: int) -> None:
    """The member at source[start : start + size] decompresses to exactly the archive held in plain,
    and that archive parses. Decompressed in pieces no larger than the scratch buffer."""
    position = 0
    for piece in decompressed_range(comp.name, source, start, size, _scratch()):
        end = position + len(piece)
        # Copies then ==: a memcpy each and a memcmp; comparing the views directly goes element
        # by element, seven times slower.
        if end > len(plain) or piece.tobytes() != bytes(plain[position:end]):
            raise ValueError("the member read back differs from the archive written")
        position = end
    if position != len(plain):
        raise ValueError("the member read back is shorter than the archive written")
    stream = _MemoryReader(plain)
    # _MemoryReader has the read and skip_exactly the cpio reader uses, without copying the buffer.
    count = sum(1 for _ in read_archive(cast(BinaryIO, stream), file_data=False))
    if stream.read(1):
        raise ValueError("data after the archive's trailer")
    if count != entries:
        raise ValueError(f"{count} entries read back, {entries} written")


def _write_buffered(comp: Compression, plain: _PlainBuffer, entries: int, sink: BinaryIO, *,
                    read_back: bool = True) -> Frame:
    """Compress plain into sink and check it — read back from sink (a segment file, opened for
    reading too), or, with read_back=False, from memory before it is written."""
    start = sink.tell()
    with plain.view() as view:
        plain_sha256 = hashlib.sha256(view).hexdigest()
        data = compress_member(comp, view)
        size, sha256 = len(data), hashlib.sha256(data).hexdigest()
        try:
            if not read_back:
                _check(comp, data, 0, size, view, entries)
            sink.write(data)
            del data  # up to FRAME_TARGET: gone before the check's buffers are needed
            if read_back:
                sink.flush()
                _check(comp, sink, start, size, view, entries)
        except (CompressionError, CpioError, ValueError) as e:
            raise _failed(comp, e) from None
    return Frame(size, plain.size, plain_sha256, entries, sha256)


class _StreamedMember:
    """A member holding one entry too large for memory, compressed into the sink as it is written."""

    def __init__(self, comp: Compression, plain_size: int, sink: BinaryIO) -> None:
        self._comp = comp
        self._sink = sink
        self._start = sink.tell()
        self._compressed = hashlib.sha256()
        # On this thread alone, as compress_member does; the codec's header records the plain size.
        self._member = open_compressor(comp, self._emit, threads=None, size=plain_size)
        self._plain_sha256 = hashlib.sha256()
        self._plain_size = 0
        self.cpio = CpioWriter(self._write)

    def _emit(self, data: Buffer) -> None:
        self._sink.write(data)
        self._compressed.update(data)

    def _write(self, data: Buffer) -> None:
        self._plain_sha256.update(data)
        self._plain_size += len(data)
        self._member.write(data)

    def finish(self) -> Frame:
        self.cpio.trailer()
        self._member.close()
        self._sink.flush()
        size = self._sink.tell() - self._start
        plain_sha256 = self._plain_sha256.hexdigest()
        # One entry, written just now by CpioWriter; its structure is checked with the rest by
        # `netbuild check`. Here: the compressed bytes give back exactly the plain ones.
        digest = hashlib.sha256()
        plain_size = 0
        try:
            for piece in decompressed_range(self._comp.name, self._sink, self._start, size, _scratch()):
                digest.update(piece)
                plain_size += len(piece)
        except CompressionError as e:
            raise _failed(self._comp, e) from None
        if plain_size != self._plain_size or digest.hexdigest() != plain_sha256:
            raise _failed(self._comp, ValueError("the member read back differs from the archive written"))
        return Frame(size, self._plain_size, plain_sha256, 1, self._compressed.hexdigest())


class FrameBuilder:
    """Cuts one group's entries into members of at most FRAME_TARGET plain bytes, compressing and
    checking each as it is cut, and appends them to sink. `frames` describes them in order."""

    def __init__(self, comp: Compression, sink: BinaryIO) -> None:
        self._comp = comp
        self._sink = sink
        self.frames: list[Frame] = []
        self._plain: _PlainBuffer | None = None
        self._cpio: CpioWriter | None = None
        self._streamed: _StreamedMember | None = None

    def writer_for(self, entry_size: int) -> CpioWriter:
        """The archive the next entry goes to, cutting a member first if it would not fit."""
        fits = entry_size + _TRAILER_SIZE <= FRAME_TARGET
        if self._cpio is not None and (not fits or self._cpio.offset + entry_size + _TRAILER_SIZE > FRAME_TARGET):
            self.finish()
        if not fits:
            self._streamed = _StreamedMember(self._comp, entry_size + _TRAILER_SIZE, self._sink)
            return self._streamed.cpio
        if self._cpio is None:
            self._plain = _PlainBuffer()
            self._cpio = CpioWriter(self._plain.write)
        return self._cpio

    def entry_done(self) -> None:
        if self._streamed is not None:
            self.frames.append(self._streamed.finish())
            self._streamed = None

    def finish(self) -> None:
        if self._cpio is None or self._plain is None:
            return
        cpio, plain = self._cpio, self._plain
        self._cpio = self._plain = None
        cpio.trailer()
        self.frames.append(_write_buffered(self._comp, plain, cpio.entries, self._sink))


def single_member(comp: Compression, sink: BinaryIO, fill: Any) -> Frame:
    """One member holding what fill(cpio) writes (the skeleton, the registration)."""
    plain = _PlainBuffer()
    cpio = CpioWriter(plain.write)
    fill(cpio)
    cpio.trailer()
    return _write_buffered(comp, plain, cpio.entries, sink, read_back=False)  # sink: the initrd, write-only
