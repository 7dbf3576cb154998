"""builder.filecopy.copy_range: in-kernel copy of a byte range, with the read/write fallback."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from builder import filecopy
from builder.filecopy import copy_range

SRC = bytes(range(256)) * 64  # 16 KiB, every offset distinguishable by its neighbours


@pytest.fixture
def src_path(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.write_bytes(SRC)
    return path


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Records every copy_file_range call while still running the real one."""
    calls: list[tuple[int, int, int]] = []
    real = os.copy_file_range

    def spy(src_fd: int, dst_fd: int, count: int, offset_src: int, offset_dst: int) -> int:
        calls.append((count, offset_src, offset_dst))
        return real(src_fd, dst_fd, count, offset_src, offset_dst)

    monkeypatch.setattr(filecopy.os, "copy_file_range", spy)
    return calls


@pytest.mark.parametrize("mode", ["wb", "w+b"])
def test_middle_range_is_appended_after_unflushed_writes(
    tmp_path: Path, src_path: Path, mode: str, kernel_calls: list[tuple[int, int, int]]
) -> None:
    dest_path = tmp_path / "dest"
    with open(src_path, "rb") as src, open(dest_path, mode) as dest:
        dest.write(b"HEAD")  # still in dest's buffer: the copy must flush it first
        assert copy_range(src, 1000, 3000, dest) == 3000
        assert dest.tell() == 4 + 3000
        dest.write(b"TAIL")
    assert dest_path.read_bytes() == b"HEAD" + SRC[1000:4000] + b"TAIL"
    assert kernel_calls, "the real-file path must use copy_file_range"
    assert kernel_calls[0] == (3000, 1000, 4)


def test_dest_read_back_after_the_copy_sees_the_copied_bytes(tmp_path: Path, src_path: Path) -> None:
    """A read+write dest caches what it read; the kernel writes under that cache, so the copy must
    drop it (flush does) or reading the range back returns the old bytes."""
    dest_path = tmp_path / "dest"
    dest_path.write_bytes(b"." * 8000)
    with open(src_path, "rb") as src, open(dest_path, "r+b") as dest:
        assert dest.read(4) == b"...."  # fills dest's read buffer with the whole file
        assert copy_range(src, 1000, 3000, dest) == 3000
        assert dest.tell() == 3004
        assert dest.read(3) == b"..."
        dest.seek(0)
        assert dest.read() == b"...." + SRC[1000:4000] + b"." * 4996


def test_two_ranges_in_a_row_keep_their_order(tmp_path: Path, src_path: Path) -> None:
    dest_path = tmp_path / "dest"
    with open(src_path, "rb") as src, open(dest_path, "wb") as dest:
        assert copy_range(src, 5000, 10, dest) == 10
        dest.write(b"|")
        assert copy_range(src, 0, 7, dest) == 7
        assert dest.tell() == 18
    assert dest_path.read_bytes() == SRC[5000:5010] + b"|" + SRC[:7]


def test_range_past_the_end_of_src_returns_the_shorter_count(tmp_path: Path, src_path: Path) -> None:
    dest_path = tmp_path / "dest"
    with open(src_path, "rb") as src, open(dest_path, "wb") as dest:
        dest.write(b"X")
        assert copy_range(src, len(SRC) - 100, 1000, dest) == 100
        assert dest.tell() == 101
        dest.write(b"Y")
    assert dest_path.read_bytes() == b"X" + SRC[-100:] + b"Y"


def test_range_starting_past_the_end_copies_nothing(tmp_path: Path, src_path: Path) -> None:
    dest_path = tmp_path / "dest"
    with open(src_path, "rb") as src, open(dest_path, "wb") as dest:
        dest.write(b"X")
        assert copy_range(src, len(SRC) + 10, 50, dest) == 0
        assert dest.tell() == 1
    assert dest_path.read_bytes() == b"X"


def test_bytesio_dest_uses_the_read_write_fallback(src_path: Path) -> None:
    dest = io.BytesIO()
    dest.write(b"HEAD")
    with open(src_path, "rb") as src:
        assert copy_range(src, 1000, 3000, dest) == 3000
    assert dest.tell() == 4 + 3000
    dest.write(b"TAIL")
    assert dest.getvalue() == b"HEAD" + SRC[1000:4000] + b"TAIL"


def test_bytesio_fallback_past_the_end_returns_the_shorter_count(src_path: Path) -> None:
    dest = io.BytesIO()
    with open(src_path, "rb") as src:
        assert copy_range(src, len(SRC) - 5, 100, dest) == 5
    assert dest.getvalue() == SRC[-5:]


def test_bytesio_src_and_dest(tmp_path: Path) -> None:
    dest = io.BytesIO(b"old")
    dest.seek(0, os.SEEK_END)
    assert copy_range(io.BytesIO(SRC), 7, 9, dest) == 9
    assert dest.getvalue() == b"old" + SRC[7:16]


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF])
def test_kernel_refusal_falls_back_to_read_write(
    tmp_path: Path, src_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(*args: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(filecopy.os, "copy_file_range", refuse)
    dest_path = tmp_path / "dest"
    with open(src_path, "rb") as src, open(dest_path, "w+b") as dest:
        dest.write(b"HEAD")
        assert copy_range(src, 1000, 3000, dest) == 3000
        assert dest.tell() == 4 + 3000
        dest.write(b"TAIL")
    assert dest_path.read_bytes() == b"HEAD" + SRC[1000:4000] + b"TAIL"


def test_other_kernel_errors_propagate(tmp_path: Path, src_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(filecopy.os, "copy_file_range", no_space)
    with open(src_path, "rb") as src, open(tmp_path / "dest", "wb") as dest, pytest.raises(OSError) as caught:
        copy_range(src, 0, 100, dest)
    assert caught.value.errno == errno.ENOSPC


def test_refusal_after_a_partial_copy_propagates(
    tmp_path: Path, src_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the kernel has copied something, falling back would repeat or lose bytes: it raises."""
    real = os.copy_file_range
    calls = 0

    def first_then_refuse(src_fd: int, dst_fd: int, count: int, offset_src: int, offset_dst: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real(src_fd, dst_fd, min(count, 100), offset_src, offset_dst)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(filecopy.os, "copy_file_range", first_then_refuse)
    with open(src_path, "rb") as src, open(tmp_path / "dest", "wb") as dest, pytest.raises(OSError) as caught:
        copy_range(src, 0, 1000, dest)
    assert caught.value.errno == errno.EXDEV


def test_short_kernel_copies_are_continued(tmp_path: Path, src_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.copy_file_range

    def at_most_333(src_fd: int, dst_fd: int, count: int, offset_src: int, offset_dst: int) -> int:
        return real(src_fd, dst_fd, min(count, 333), offset_src, offset_dst)

    monkeypatch.setattr(filecopy.os, "copy_file_range", at_most_333)
    dest_path = tmp_path / "dest"
    with open(src_path, "rb") as src, open(dest_path, "wb") as dest:
        dest.write(b"H")
        assert copy_range(src, 11, 5000, dest) == 5000
        assert dest.tell() == 5001
    assert dest_path.read_bytes() == b"H" + SRC[11:5011]


def test_multi_megabyte_copy_is_exact(tmp_path: Path, kernel_calls: list[tuple[int, int, int]]) -> None:
    data = os.urandom(5 << 20)
    src_path = tmp_path / "big"
    src_path.write_bytes(b"junk" + data + b"more junk")
    dest_path = tmp_path / "dest"
    with open(src_path, "rb") as src, open(dest_path, "wb") as dest:
        dest.write(b"<")
        assert copy_range(src, 4, len(data), dest) == len(data)
        assert dest.tell() == 1 + len(data)
        dest.write(b">")
    assert dest_path.read_bytes() == b"<" + data + b">"
    assert kernel_calls


def test_multi_megabyte_fallback_is_exact(tmp_path: Path) -> None:
    data = os.urandom(5 << 20)
    src_path = tmp_path / "big"
    src_path.write_bytes(b"junk" + data + b"more junk")
    dest = io.BytesIO()
    with open(src_path, "rb") as src:
        assert copy_range(src, 4, len(data), dest) == len(data)
    assert dest.getvalue() == data
