"""Members of the whole-store initrd: whole newc archives of at most FRAME_TARGET plain bytes, each
compressed in one call and checked at once — decompressed anew and its records parsed — so that
the build's self-check need only confirm the file holds the bytes checked here.

An entry never spans two members (the kernel requires whole records in each); an entry too large
for one member gets a member of its own, compressed as it is written rather than held in memory.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from builder.errors import NetbuildError
from builder.formats.compress import Compression, CompressionError
from builder.formats.cpio import TRAILER_NAME, CpioError, CpioWriter, read_archive
from builder.formats.members import StreamingMember, compress_member, decompressed_pieces

CHUNK = 1 << 20
FRAME_TARGET = 16 << 20  # plain bytes per member: < 1% larger than one stream at zstd -10
_HEADER_SIZE = 110


@dataclass(frozen=True)
class Frame:
    """One finished member, checked: compressed bytes in memory or in a spooled file."""

    data: bytes | IO[bytes]
    size: int
    plain_size: int
    plain_sha256: str
    entries: int
    sha256: str

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.data, bytes):
            yield self.data
            return
        self.data.seek(0)
        while chunk := self.data.read(CHUNK):
            yield chunk
        self.data.close()

    def describe(self) -> dict[str, Any]:
        return {"size": self.size, "plain_size": self.plain_size, "plain_sha256": self.plain_sha256,
                "entries": self.entries, "sha256": self.sha256}


def entry_size(name: bytes, data_size: int) -> int:
    header = _HEADER_SIZE + len(name) + 1
    return header + (-header % 4) + data_size + (-data_size % 4)


_TRAILER_SIZE = entry_size(TRAILER_NAME.encode(), 0)


class _MemoryReader:
    """read() over a buffer without copying it whole (io.BytesIO would copy a bytearray)."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._view = memoryview(data)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._position + size)
        out = bytes(self._view[self._position : end])
        self._position = end
        return out

    def tell(self) -> int:
        return self._position


def check_member(
    codec: str, chunks: Iterator[bytes], plain: bytes | bytearray | None, plain_size: int, plain_sha256: str,
    entries: int,
) -> None:
    """Decompress a member anew and confirm it is exactly the archive meant (size and sha256 of the
    plain bytes), and that the archive is well formed: every record parsed, one trailer, nothing
    after it. `plain`, when the caller still holds it, is parsed instead of a second decompression.
    Raises CompressionError, CpioError or ValueError."""
    digest = hashlib.sha256()
    size = 0
    for piece in decompressed_pieces(codec, chunks):
        digest.update(piece)
        size += len(piece)
    if size != plain_size or digest.hexdigest() != plain_sha256:
        raise ValueError("the member read back differs from the archive written")
    if plain is None:
        return
    stream = _MemoryReader(plain)
    count = sum(1 for _ in read_archive(stream, file_data=False))  # type: ignore[arg-type]
    if stream.read(1):
        raise ValueError("data after the archive's trailer")
    if count != entries:
        raise ValueError(f"{count} entries read back, {entries} written")


def compress_checked(comp: Compression, plain: bytearray, entries: int) -> Frame:
    plain_sha256 = hashlib.sha256(plain).hexdigest()
    data = compress_member(comp, plain)
    pieces = (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))  # bounded decompression output
    try:
        check_member(comp.name, pieces, plain, len(plain), plain_sha256, entries)
    except (CompressionError, CpioError, ValueError) as e:
        raise NetbuildError(f"self-check: a {comp.name} member failed to read back: {e}") from None
    return Frame(data, len(data), len(plain), plain_sha256, entries, hashlib.sha256(data).hexdigest())


class _StreamedFrame:
    """A member holding one entry too large for memory: compressed into a spooled file as written."""

    def __init__(self, comp: Compression, plain_size: int) -> None:
        self._comp = comp
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=FRAME_TARGET)  # noqa: SIM115
        self._compressed = hashlib.sha256()
        self.compressed_size = 0
        self._member = StreamingMember(comp, plain_size, self._sink)
        self.plain_sha256 = hashlib.sha256()
        self.plain_size = 0
        self.cpio = CpioWriter(self._write)

    def _sink(self, data: bytes) -> None:
        self.file.write(data)
        self._compressed.update(data)
        self.compressed_size += len(data)

    def _write(self, data: bytes) -> None:
        self.plain_sha256.update(data)
        self.plain_size += len(data)
        self._member.write(data)

    def finish(self) -> Frame:
        self.cpio.trailer()
        self._member.close()
        self.file.seek(0)
        plain_sha256 = self.plain_sha256.hexdigest()
        # Small input pieces bound what one decompress call returns: a file of zeros compresses
        # several-thousandfold, and this member's plain size is unbounded.
        chunks = iter(lambda: self.file.read(256), b"")
        try:
            # One entry, written just now by CpioWriter; its structure is checked with the rest by
            # `netbuild check`. Here: the compressed bytes give back exactly the plain ones.
            check_member(self._comp.name, chunks, None, self.plain_size, plain_sha256, 1)
        except (CompressionError, CpioError, ValueError) as e:
            raise NetbuildError(f"self-check: a {self._comp.name} member failed to read back: {e}") from None
        return Frame(self.file, self.compressed_size, self.plain_size, plain_sha256, 1, self._compressed.hexdigest())


class FrameBuilder:
    """Cuts one group's entries into members of at most FRAME_TARGET plain bytes."""

    def __init__(self, comp: Compression, emit: Callable[[Callable[[], Frame]], None]) -> None:
        self._comp = comp
        self._emit = emit  # receives a job that produces the member; the caller decides where it runs
        self._buffer = bytearray()
        self._cpio: CpioWriter | None = None
        self._streamed: _StreamedFrame | None = None

    def writer_for(self, entry_size: int) -> CpioWriter:
        """The archive the next entry goes to, cutting a member first if it would not fit."""
        fits = entry_size + _TRAILER_SIZE <= FRAME_TARGET
        if self._cpio is not None and (not fits or self._cpio.offset + entry_size + _TRAILER_SIZE > FRAME_TARGET):
            self.finish()
        if not fits:
            self._streamed = _StreamedFrame(self._comp, entry_size + _TRAILER_SIZE)
            return self._streamed.cpio
        if self._cpio is None:
            self._buffer = bytearray()
            self._cpio = CpioWriter(self._buffer.extend)
        return self._cpio

    def entry_done(self) -> None:
        if self._streamed is not None:
            frame = self._streamed.finish()
            self._streamed = None
            self._emit(lambda: frame)

    def finish(self) -> None:
        if self._cpio is None:
            return
        cpio, buffer, comp = self._cpio, self._buffer, self._comp
        self._cpio = None
        cpio.trailer()
        self._emit(lambda: compress_checked(comp, buffer, cpio.entries))


def single_member(comp: Compression, fill: Callable[[CpioWriter], None]) -> Frame:
    buffer = bytearray()
    cpio = CpioWriter(buffer.extend)
    fill(cpio)
    cpio.trailer()
    return compress_checked(comp, buffer, cpio.entries)
