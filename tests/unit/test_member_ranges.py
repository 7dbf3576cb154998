"""builder.formats.compress: decompressed_range (one member read from a byte range of a file, in
bounded pieces) and zstd_frame_size (where a zstd frame ends, from its block headers)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard
from support.codecs import zstd_frame_size

from builder.formats.compress import Compression, decompressed_range, parse_compression
from builder.formats.streams import CompressionError, compress_member

CODECS = ("zstd", "gzip", "xz", "none")
COMPRESSED = ("zstd", "gzip", "xz")
BEFORE = b"junk before the member \x00\xff" * 3
AFTER = b"\x01 junk after the member"


def mixed(size: int, seed: int = 11) -> bytes:
    """Incompressible bytes, text and zero runs."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    while sum(map(len, parts)) < size:
        parts += [rng.randbytes(20_000), b"the quick brown fox " * 1500, bytes(40_000)]
    return b"".join(parts)[:size]


PLAIN = mixed(700_000)


@functools.cache
def member(name: str, plain: bytes = PLAIN, level: int | None = None) -> bytes:
    comp = parse_compression(name) if level is None else Compression(name, level)
    return compress_member(comp, plain)


@functools.cache
def zeros_member(name: str, size: int) -> bytes:
    return compress_member(Compression(name, {"xz": 0, "gzip": 9, "zstd": 3}[name]), bytes(size))


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Callable[[bytes], BinaryIO]]:
    """Writes data to a file and returns it open for reading (closed after the test)."""
    opened: list[BinaryIO] = []

    def write(data: bytes) -> BinaryIO:
        path = tmp_path / f"file{len(opened)}"
        path.write_bytes(data)
        f = open(path, "rb")  # noqa: SIM115 - closed by the fixture
        opened.append(f)
        return f

    yield write
    for f in opened:
        f.close()


def read_range(name: str, f: BinaryIO, start: int, size: int, buffer: bytearray) -> tuple[bytes, list[int]]:
    """Everything decompressed_range yields, copying each piece before asking for the next."""
    out = bytearray()
    sizes: list[int] = []
    for piece in decompressed_range(name, f, start, size, buffer):
        assert isinstance(piece, memoryview)
        assert piece.obj is buffer, "pieces must be views of the caller's buffer"
        sizes.append(len(piece))
        out += bytes(piece)
    return bytes(out), sizes


def drain(name: str, f: BinaryIO, start: int, size: int, buffer_size: int = 1 << 16) -> None:
    for _ in decompressed_range(name, f, start, size, bytearray(buffer_size)):
        pass


# decompressed_range: round trips


@pytest.mark.parametrize("buffer_size", [4096, 1 << 20])
@pytest.mark.parametrize("name", CODECS)
def test_member_between_junk_decompresses_to_its_plain_bytes(
    place: Callable[[bytes], BinaryIO], name: str, buffer_size: int
) -> None:
    data = member(name)
    f = place(BEFORE + data + AFTER)
    buffer = bytearray(buffer_size)
    plain, sizes = read_range(name, f, len(BEFORE), len(data), buffer)
    assert plain == PLAIN
    assert max(sizes) <= buffer_size
    assert all(sizes), "no empty pieces"
    if buffer_size < len(PLAIN):
        assert len(sizes) >= len(PLAIN) // buffer_size


@pytest.mark.parametrize("name", CODECS)
def test_tiny_buffer(place: Callable[[bytes], BinaryIO], name: str) -> None:
    plain = mixed(5000, seed=3)
    data = member(name, plain)
    f = place(BEFORE + data + AFTER)
    got, sizes = read_range(name, f, len(BEFORE), len(data), bytearray(7))
    assert got == plain
    assert max(sizes) <= 7


@pytest.mark.parametrize("name", CODECS)
def test_empty_member(place: Callable[[bytes], BinaryIO], name: str) -> None:
    data = member(name, b"")
    f = place(BEFORE + data + AFTER)
    assert read_range(name, f, len(BEFORE), len(data), bytearray(64)) == (b"", [])


def test_zstd_frame_without_checksum_or_content_size(place: Callable[[bytes], BinaryIO]) -> None:
    """Frames from other writers: streamed (no content size in the header) and unchecksummed."""
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=False, write_content_size=False)
    engine = compressor.compressobj()
    data = engine.compress(PLAIN) + engine.flush()
    assert not zstandard.get_frame_parameters(data).has_checksum
    f = place(BEFORE + data + AFTER)
    assert read_range("zstd", f, len(BEFORE), len(data), bytearray(1 << 16))[0] == PLAIN


# decompressed_range: bounded output


@pytest.mark.parametrize("name", COMPRESSED)
def test_highly_compressible_member_comes_out_in_buffer_sized_pieces(
    place: Callable[[bytes], BinaryIO], name: str
) -> None:
    size = 64 << 20
    data = zeros_member(name, size)
    assert len(data) < size // 500  # deflate tops out near 1000:1; the case the buffer cap exists for
    f = place(BEFORE + data + AFTER)
    buffer = bytearray(64 << 10)
    zeros = bytes(len(buffer))
    total = pieces = 0
    for piece in decompressed_range(name, f, len(BEFORE), len(data), buffer):
        assert 0 < len(piece) <= len(buffer)
        assert piece == zeros[: len(piece)]
        total += len(piece)
        pieces += 1
    assert total == size
    assert pieces >= size // len(buffer)


# decompressed_range: damaged members


@pytest.mark.parametrize("cut", [1, 3, 4, 8, 100])
@pytest.mark.parametrize("name", COMPRESSED)
def test_truncated_member_raises(place: Callable[[bytes], BinaryIO], name: str, cut: int) -> None:
    data = member(name)
    f = place(BEFORE + data + AFTER)  # the missing bytes are in the file, just outside the range
    with pytest.raises(CompressionError, match=rf"^{name}: "):
        drain(name, f, len(BEFORE), len(data) - cut)


@pytest.mark.parametrize("name", COMPRESSED)
def test_member_cut_inside_its_header_raises(place: Callable[[bytes], BinaryIO], name: str) -> None:
    data = member(name)
    f = place(BEFORE + data + AFTER)
    with pytest.raises(CompressionError, match=rf"^{name}: "):
        drain(name, f, len(BEFORE), 5)


@pytest.mark.parametrize("name", COMPRESSED)
def test_empty_range_raises(place: Callable[[bytes], BinaryIO], name: str) -> None:
    f = place(BEFORE + member(name) + AFTER)
    with pytest.raises(CompressionError):
        drain(name, f, len(BEFORE), 0)


@pytest.mark.parametrize("extra", [1, len(AFTER)])
@pytest.mark.parametrize(
    ("name", "message"),
    [("zstd", "does not end where the member does"), ("gzip", "bytes after the end"), ("xz", "bytes after the end")],
)
def test_range_longer_than_the_member_raises(
    place: Callable[[bytes], BinaryIO], name: str, message: str, extra: int
) -> None:
    data = member(name)
    f = place(BEFORE + data + AFTER)
    with pytest.raises(CompressionError, match=message):
        drain(name, f, len(BEFORE), len(data) + extra)


@functools.cache
def member_of_exact_length(name: str, length: int) -> bytes:
    """A member of exactly `length` bytes, from incompressible data (stored/uncompressed blocks)."""
    rng = random.Random(length)
    plain_size = length - 100
    for _ in range(10):
        data = compress_member(parse_compression(name), rng.randbytes(plain_size))
        if len(data) == length:
            return data
        plain_size += length - len(data)
    raise AssertionError(f"no {name} member of exactly {length} bytes")


@pytest.mark.parametrize("name", ["gzip", "xz"])
def test_junk_starting_exactly_at_an_input_read_boundary_raises(place: Callable[[bytes], BinaryIO], name: str) -> None:
    """The decoder never sees the junk (the member fills the first 64 KiB read exactly): the range
    itself must be checked for bytes left after the member's end."""
    data = member_of_exact_length(name, 1 << 16)
    f = place(data + AFTER)
    drain(name, f, 0, len(data))  # the exact member is fine
    with pytest.raises(CompressionError, match="bytes after the end"):
        drain(name, f, 0, len(data) + 1)


@pytest.mark.parametrize("name", COMPRESSED)
def test_corrupted_byte_raises(place: Callable[[bytes], BinaryIO], name: str) -> None:
    data = bytearray(member(name))
    for position in (len(data) // 2, len(data) - 2):  # inside the data; inside the checksum/trailer
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        f = place(BEFORE + bytes(damaged) + AFTER)
        with pytest.raises(CompressionError, match=rf"^{name}: "):
            drain(name, f, len(BEFORE), len(data))


def test_none_takes_the_range_as_it_is(place: Callable[[bytes], BinaryIO]) -> None:
    f = place(BEFORE + PLAIN + AFTER)
    got, sizes = read_range("none", f, len(BEFORE), 123_457, bytearray(10_000))
    assert got == PLAIN[:123_457]
    assert sizes == [10_000] * 12 + [3457]


# zstd_frame_size


def reader(data: bytes, log: list[int] | None = None) -> Callable[[int, int], bytes]:
    def read_at(offset: int, count: int) -> bytes:
        if log is not None:
            log.append(count)
        return data[offset : offset + count]

    return read_at


def block_types(frame: bytes) -> set[int]:
    """The Block_Type of every block in frame (0 raw, 1 RLE, 2 compressed), walked by hand."""
    position = zstandard.frame_header_size(frame[:18])
    kinds = set()
    while True:
        value = int.from_bytes(frame[position : position + 3], "little")
        kind = (value >> 1) & 3
        kinds.add(kind)
        position += 3 + (1 if kind == 1 else value >> 3)
        if value & 1:
            return kinds


ZSTD_INPUTS = {
    "empty": b"",
    "tiny": b"x",
    "random 300 KB": random.Random(1).randbytes(300_000),  # raw blocks
    "zeros 5 MB": bytes(5_000_000),  # RLE blocks
    "mixed": PLAIN,  # compressed blocks
}


@pytest.mark.parametrize("level", [1, 10, 19])
@pytest.mark.parametrize("plain", list(ZSTD_INPUTS.values()), ids=list(ZSTD_INPUTS))
def test_zstd_frame_size_is_the_member_length(plain: bytes, level: int) -> None:
    data = member("zstd", plain, level)
    assert zstd_frame_size(reader(data)) == len(data)


def test_zstd_inputs_cover_every_block_type() -> None:
    """Keeps the cases above honest: RLE blocks store one byte for many, raw blocks store all."""
    assert 1 in block_types(member("zstd", ZSTD_INPUTS["zeros 5 MB"], 10))
    assert 0 in block_types(member("zstd", ZSTD_INPUTS["random 300 KB"], 10))
    assert 2 in block_types(member("zstd", ZSTD_INPUTS["mixed"], 10))


@pytest.mark.parametrize("plain", list(ZSTD_INPUTS.values()), ids=list(ZSTD_INPUTS))
def test_zstd_frame_size_ignores_a_following_frame(plain: bytes) -> None:
    first = member("zstd", plain, 10)
    second = member("zstd", b"second frame " * 100, 10)
    assert zstd_frame_size(reader(first + second)) == len(first)
    assert zstd_frame_size(reader(first + b"\x00" * 50)) == len(first)


@pytest.mark.parametrize(("checksum", "content_size"), [(False, False), (False, True), (True, False), (True, True)])
def test_zstd_frame_size_with_other_frame_headers(checksum: bool, content_size: bool) -> None:
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=checksum, write_content_size=content_size)
    for plain in (PLAIN, bytes(1_000_000)):
        engine = compressor.compressobj()
        data = engine.compress(plain) + engine.flush()
        assert zstd_frame_size(reader(data + b"after")) == len(data)


def test_zstd_frame_size_reads_only_headers() -> None:
    data = member("zstd", ZSTD_INPUTS["random 300 KB"], 10)
    log: list[int] = []
    assert zstd_frame_size(reader(data, log)) == len(data)
    assert sum(log) <= 18 + 3 * 3  # the frame header and three block headers, not 300 KB


@pytest.mark.parametrize("cut", [1, 4, 5, 100])
def test_zstd_frame_size_of_a_truncated_frame(cut: int) -> None:
    data = member("zstd", ZSTD_INPUTS["random 300 KB"], 10)
    short = data[: len(data) - cut]
    # Every block header is still there (the cut is in the checksum or the last raw block's
    # payload): the frame is sized from its headers and ends past the data, which
    # decompressed_range reports as "does not end where the member does".
    assert zstd_frame_size(reader(short)) == len(data)


@pytest.mark.parametrize("data", [b"", b"\x28\xb5", b"not a zstd frame at all", member("gzip")])
def test_zstd_frame_size_of_something_else_raises(data: bytes) -> None:
    with pytest.raises(CompressionError, match=r"^zstd: "):
        zstd_frame_size(reader(data))


def test_zstd_frame_size_of_a_cut_block_header_raises() -> None:
    data = member("zstd", ZSTD_INPUTS["random 300 KB"], 10)
    header = zstandard.frame_header_size(data[:18])
    with pytest.raises(CompressionError, match="truncated"):
        zstd_frame_size(reader(data[: header + 2]))
