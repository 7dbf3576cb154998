"""Where a member ends, from its codec's framing alone — without decoding it.

- zstd: a frame's header, then blocks, each with a 3-byte header saying its size (RFC 8878 §3.1.1);
  the self-check and the initrd writer check that a member is exactly one frame;
- lz4's legacy frame (`lz4 -l`, the only lz4 format the kernel reads): chunks, no end mark;
- lzo: an lzop file (as the kernel's unlzo.c parses it), blocks until a zero length.

Python has no module for lz4 or lzo: their plain bytes come from libarchive reading exactly the
extent found here (builder/formats/streams.py). netbuild reads both (`netbuild inspect`, a
kernel's payload), never writes them. Each function is given its codec's name (for errors) and
magic by the codec table, builder/formats/compress.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import zstandard

from builder.formats.streams import codec_error

ReadAt = Callable[[int, int], bytes]  # (offset, count) → the bytes there (fewer at the end)


def zstd_frame_size(name: str, read_at: ReadAt) -> int:
    """Where the zstd frame starting at offset 0 ends, from its block headers."""
    head = read_at(0, 18)  # the largest frame header
    try:
        position = zstandard.frame_header_size(head)
        has_checksum = zstandard.get_frame_parameters(head).has_checksum
    except zstandard.ZstdError as e:
        raise codec_error(name, str(e)) from None
    while True:
        header = read_at(position, 3)
        if len(header) < 3:
            raise codec_error(name, "member truncated")
        value = int.from_bytes(header, "little")
        last, kind, block_size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:
            raise codec_error(name, "reserved block type")
        position += 3 + (1 if kind == 1 else block_size)  # an RLE block stores its byte once
        if last:
            return position + (4 if has_checksum else 0)


_LZ4_BLOCK = 8 << 20  # uncompressed bytes per chunk of the legacy format
_LZ4_MAX_CHUNK = _LZ4_BLOCK + _LZ4_BLOCK // 255 + 16  # LZ4_compressBound(8 MiB)


def lz4_legacy_size(name: str, magic: bytes, read_at: ReadAt, size: int) -> int:
    """Bytes of the lz4 legacy member at offset 0 of `size` bytes. The format has no end mark:
    chunks (u32 size, data) follow until the data ends. Like the kernel, a repeated magic
    continues the stream; a zero or impossible chunk size is where it stops (NUL padding, or the
    next member)."""
    head = read_at(0, 4)
    if len(head) < 4:
        raise codec_error(name, "truncated in its magic")
    if head != magic:
        raise codec_error(name, f"not the legacy frame format (magic {magic.hex(' ')}), which is all the kernel "
                                "reads")
    end = 4
    while True:
        word = read_at(end, 4)
        if len(word) < 4:
            return end
        if word == magic:
            end += 4
            continue
        (chunk,) = struct.unpack("<I", word)
        if chunk == 0 or chunk > _LZ4_MAX_CHUNK:
            return end
        here = end + 4
        if here + chunk > size:
            raise codec_error(name, f"truncated chunk at {here} ({chunk} bytes, {size - here} left)")
        end = here + chunk


_LZOP_MAGIC_TAIL = bytes.fromhex("000d0a1a0a")  # after the codec's magic: an lzop file's whole magic
_LZOP_FILTER, _LZOP_EXTRA = 0x800, 0x40
_LZOP_ADLER_D, _LZOP_ADLER_C, _LZOP_CRC_D, _LZOP_CRC_C = 0x1, 0x2, 0x100, 0x200


def lzo_size(name: str, magic: bytes, read_at: ReadAt, size: int) -> int:
    """Bytes of the lzop file at offset 0 of `size` bytes: its header, then blocks until a zero length."""
    position = 0

    def take(count: int, what: str) -> bytes:
        nonlocal position
        data = read_at(position, count)
        if len(data) != count:
            raise codec_error(name, f"truncated in {what}")
        position += count
        return data

    def u(count: int, what: str = "the header") -> int:
        return int.from_bytes(take(count, what), "big")

    file_magic = magic + _LZOP_MAGIC_TAIL
    if take(len(file_magic), "its magic") != file_magic:
        raise codec_error(name, "not an lzop file (bad magic)")
    version = u(2)
    u(2)  # library version
    if version >= 0x0940:
        u(2)  # version needed to extract
    u(1)  # method
    if version >= 0x0940:
        u(1)  # level
    flags = u(4)
    if flags & _LZOP_FILTER:
        u(4)
    u(4)  # mode
    u(4)  # mtime
    if version >= 0x0940:
        u(4)  # mtime, high half
    take(u(1), "the file name")
    u(4)  # header checksum
    if flags & _LZOP_EXTRA:
        take(u(4, "the extra field"), "the extra field")
        u(4, "the extra field")
    while True:
        plain = u(4, "a block header")
        if plain == 0:
            return position
        packed = u(4, "a block header")
        checksums = bool(flags & _LZOP_ADLER_D) + bool(flags & _LZOP_CRC_D)
        if packed < plain:
            checksums += bool(flags & _LZOP_ADLER_C) + bool(flags & _LZOP_CRC_C)
        skip = 4 * checksums + packed
        if position + skip > size:
            raise codec_error(name, "truncated in a block")
        position += skip
