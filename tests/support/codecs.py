"""Shorthands the codec tests use for one member, over the codec table's own methods."""

from __future__ import annotations

from collections.abc import Callable

from builder.formats.compress import CODECS, ZSTD


def decompress_member(name: str, data: bytes) -> tuple[bytes, int]:
    """The one member of codec `name` at the start of data: (plain bytes, compressed bytes it took)."""
    return CODECS[name].decompress(data)


def zstd_frame_size(read_at: Callable[[int, int], bytes]) -> int:
    """Where the zstd frame starting at offset 0 ends, from its block headers alone."""
    return ZSTD.frame_size(read_at)
