"""The bounds of the one member scanner and cpio reader (builder/formats/streams.py, cpio.py)."""

from __future__ import annotations

import io

import pytest

from builder.formats.cpio import PATH_MAX, CpioError, read_archive
from builder.formats.streams import PLAIN_FLOOR, PLAIN_LIMIT, PLAIN_RATIO, CompressionError, check_budget


def _header(name: bytes, mode: int, filesize: int, namesize: int | None = None) -> bytes:
    namesize = len(name) + 1 if namesize is None else namesize
    fields = [1, mode, 0, 0, 1, 1, filesize, 0, 0, 0, 0, namesize, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def test_the_budget_allows_a_floor_then_a_ratio_then_stops() -> None:
    check_budget("zstd", PLAIN_FLOOR, 1)  # a small member may unpack to the floor
    check_budget("zstd", PLAIN_RATIO * (16 << 20), 16 << 20)  # 16 GiB from 16 MiB
    with pytest.raises(CompressionError, match="limit reached"):
        check_budget("zstd", PLAIN_FLOOR + 1, 1000)
    with pytest.raises(CompressionError, match="limit reached"):
        check_budget("zstd", PLAIN_LIMIT + 1, PLAIN_LIMIT)


def test_a_name_past_path_max_is_refused_before_it_is_read() -> None:
    archive = _header(b"x", 0o100644, 0, namesize=PATH_MAX + 1)[:110]
    with pytest.raises(CpioError, match="PATH_MAX"):
        list(read_archive(io.BytesIO(archive)))
    ok = _header(b"a" * (PATH_MAX - 1), 0o100644, 0) + _header(b"TRAILER!!!", 0, 0)
    assert len(list(read_archive(io.BytesIO(ok)))) == 1


def test_a_symlink_target_past_path_max_is_refused() -> None:
    archive = _header(b"link", 0o120777, PATH_MAX + 1)
    with pytest.raises(CpioError, match="limit reached"):
        list(read_archive(io.BytesIO(archive)))
