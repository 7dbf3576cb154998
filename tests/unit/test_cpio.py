from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import libarchive
import pytest

from builder.formats.cpio import MAX_FILE_SIZE, CpioEntry, CpioError, CpioWriter, read_archive

MTIME = 1_234_567_890
BIG = bytes(range(256)) * 1000 + b"odd"  # 256003 bytes, not a multiple of 4


@dataclass(frozen=True)
class Expected:
    name: str
    mode: int  # with the file type bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


EXPECTED = [
    Expected("nix", stat.S_IFDIR | 0o755),
    Expected("nix/store", stat.S_IFDIR | 0o1775),
    Expected("nix/store/empty", stat.S_IFREG | 0o444),
    Expected("nix/store/exec", stat.S_IFREG | 0o555, b"#!/bin/sh\n"),
    Expected("nix/store/odd size", stat.S_IFREG | 0o644, b"12345"),
    Expected("nix/store/big", stat.S_IFREG | 0o4755, BIG),
    Expected("nix/store/caf\u00e9", stat.S_IFREG | 0o644, "\u00e9".encode()),
    Expected("nix/store/rel", stat.S_IFLNK | 0o777, b"exec"),
    Expected("nix/store/abs", stat.S_IFLNK | 0o777, b"/nix/store/exec"),
    Expected("nix/store/dangling", stat.S_IFLNK | 0o777, b"../nowhere"),
    Expected("dev", stat.S_IFDIR | 0o755),
    Expected("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    Expected("dev/vda", stat.S_IFBLK | 0o660, rdev=(253, 0)),
]


def write_sample(mtime: int = MTIME, first_inode: int = 1) -> bytes:
    out = bytearray()
    writer = CpioWriter(out.extend, mtime=mtime, first_inode=first_inode)
    writer.directory("nix", 0o755)
    writer.directory("nix/store", 0o1775)
    writer.file("nix/store/empty", 0o444, b"")
    writer.file("nix/store/exec", 0o555, b"#!/bin/sh\n")
    writer.file("nix/store/odd size", 0o644, b"12345")
    writer.regular("nix/store/big", 0o4755, len(BIG))
    for start in range(0, len(BIG), 65536):
        writer.data(BIG[start : start + 65536])
    writer.file("nix/store/caf\u00e9", 0o644, "\u00e9".encode())
    writer.symlink("nix/store/rel", b"exec")
    writer.symlink("nix/store/abs", b"/nix/store/exec")
    writer.symlink("nix/store/dangling", b"../nowhere")
    writer.directory("dev", 0o755)
    writer.device("dev/console", 0o600, "char", 5, 1)
    writer.device("dev/vda", 0o660, "block", 253, 0)
    assert writer.entries == len(EXPECTED)
    writer.trailer()
    assert writer.entries == len(EXPECTED)
    return bytes(out)


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is required for these tests"
    return path


def test_exact_bytes_of_a_minimal_archive() -> None:
    out = bytearray()
    writer = CpioWriter(out.extend)
    writer.file("a", 0o644, b"hi")
    writer.trailer()
    # ino, mode, uid, gid, nlink, mtime, filesize, then devmajor/devminor/rdevmajor/rdevminor
    fields = "".join(("00000001", "000081A4", "00000000", "00000000", "00000001", "00000001", "00000002"))
    fields += "00000000" * 4
    header = b"070701" + fields.encode() + b"00000002" + b"00000000" + b"a\0"
    trailer = b"070701" + (b"00000000" * 4 + b"00000001" + b"00000000" * 6 + b"0000000B" + b"00000000")
    expected = header + b"hi\0\0" + trailer + b"TRAILER!!!\0" + b"\0" * 3
    assert bytes(out) == expected
    assert len(header) == 112 and len(out) % 4 == 0


def test_gnu_cpio_extracts_what_was_written(tmp_path: Path) -> None:
    archive = write_sample()
    subprocess.run(
        [tool("cpio"), "-i", "-d", "--no-absolute-filenames", "--preserve-modification-time", "--quiet"],
        input=archive, cwd=tmp_path, check=True, capture_output=True,
    )
    extracted = sorted(
        os.path.relpath(os.path.join(top, name), tmp_path)
        for top, dirs, files in os.walk(tmp_path)
        for name in dirs + files
    )
    assert extracted == sorted(entry.name for entry in EXPECTED)
    for expected in EXPECTED:
        path = tmp_path / expected.name
        st = os.lstat(path)
        assert (expected.name, st.st_mode) == (expected.name, expected.mode)
        # GNU cpio 2.13 leaves symlink and directory mtimes alone; the libarchive test checks those.
        if not (stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            assert st.st_mtime == MTIME, expected.name
        assert (st.st_uid, st.st_gid) == (0, 0)
        if stat.S_ISREG(st.st_mode):
            assert path.read_bytes() == expected.data
        elif stat.S_ISLNK(st.st_mode):
            assert os.readlink(os.fsencode(path)) == expected.data
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == expected.rdev


def test_gnu_cpio_lists_without_complaint() -> None:
    result = subprocess.run([tool("cpio"), "-t"], input=write_sample(), check=True, capture_output=True)
    assert result.stdout.decode().splitlines() == [entry.name for entry in EXPECTED]
    assert b"block" in result.stderr  # "N blocks" and nothing about junk or truncation
    assert b"warning" not in result.stderr.lower()


def test_libarchive_reads_what_was_written() -> None:
    seen = []
    with libarchive.memory_reader(write_sample()) as archive:
        for entry in archive:
            data = b"".join(entry.get_blocks()) if entry.isreg else b""
            seen.append(
                Expected(
                    entry.pathname,
                    entry.mode,
                    os.fsencode(entry.linkpath) if entry.issym else data,
                    (entry.rdevmajor, entry.rdevminor) if entry.isdev else (0, 0),
                )
            )
            assert entry.mtime == MTIME and (entry.uid, entry.gid) == (0, 0)
            assert entry.size == (len(data) if entry.isreg else entry.size)
    assert seen == EXPECTED


def test_round_trip_through_read_archive() -> None:
    archive = write_sample(mtime=1, first_inode=100)
    entries = list(read_archive(io.BytesIO(archive)))
    assert [Expected(e.name, e.mode, e.data, (e.rdevmajor, e.rdevminor)) for e in entries] == EXPECTED
    assert [e.ino for e in entries] == list(range(100, 100 + len(EXPECTED)))
    assert {(e.uid, e.gid, e.nlink, e.mtime) for e in entries} == {(0, 0, 1, 1)}
    assert all(e.offset % 4 == 0 for e in entries)
    assert [e.size for e in entries] == [len(x.data) for x in EXPECTED]


def test_read_archive_stops_after_trailer_for_concatenated_archives() -> None:
    first, second = write_sample(), write_sample(mtime=7)
    stream = io.BytesIO(b"JUNK" + first + second + b"\0" * 512)
    stream.seek(4)
    entries = list(read_archive(stream))
    assert stream.tell() == 4 + len(first)
    assert entries[0].offset == 4  # offsets are positions in the stream
    assert [e.mtime for e in read_archive(stream)] == [7] * len(EXPECTED)
    assert stream.tell() == 4 + len(first) + len(second)


def test_read_archive_reads_a_gnu_cpio_archive(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"gnu")
    (root / "d" / "sub" / "x").write_bytes(os.urandom(1001))
    (root / "d" / "exe").write_bytes(b"")
    (root / "d" / "exe").chmod(0o751)
    (root / "d" / "link").symlink_to("sub/x")
    find = ["find", ".", "-mindepth", "1", "-printf", "%P\\n"]
    names = subprocess.run(find, cwd=root, check=True, capture_output=True).stdout
    archive = subprocess.run([tool("cpio"), "-o", "-H", "newc", "--quiet"], input=names, cwd=root, check=True,
                             capture_output=True).stdout
    stream = io.BytesIO(archive)
    entries = {entry.name: entry for entry in read_archive(stream)}
    assert set(entries) == {os.fsdecode(line) for line in names.splitlines()}
    assert archive[stream.tell() :].strip(b"\0") == b""  # GNU pads to 512 after the trailer
    for name, entry in entries.items():
        st = os.lstat(root / name)
        assert (entry.mode, entry.mtime, entry.ino) == (st.st_mode, int(st.st_mtime), st.st_ino)
        if stat.S_ISREG(st.st_mode):
            assert entry.data == (root / name).read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            assert entry.data == b"sub/x"


def writer() -> tuple[CpioWriter, bytearray]:
    out = bytearray()
    return CpioWriter(out.extend), out


def test_writer_refuses_a_file_of_4_gib() -> None:
    cpio, out = writer()
    with pytest.raises(CpioError, match=r"nix/store/huge: 4294967296 bytes .* \(4 GiB limit\)"):
        cpio.regular("nix/store/huge", 0o444, MAX_FILE_SIZE + 1)
    assert out == b""
    cpio.regular("nix/store/max", 0o444, MAX_FILE_SIZE)  # the largest size that fits is accepted


@pytest.mark.parametrize(("name", "message"), [("/abs", "leading '/'"), ("", "empty name"),
                                               ("TRAILER!!!", "reserved")])
def test_writer_refuses_bad_names(name: str, message: str) -> None:
    cpio, _ = writer()
    with pytest.raises(CpioError, match=message):
        cpio.directory(name, 0o755)


def test_writer_enforces_data_sizes() -> None:
    cpio, _ = writer()
    cpio.regular("f", 0o644, 3)
    cpio.data(b"ab")
    with pytest.raises(CpioError, match="f: more data"):
        cpio.data(b"cd")
    with pytest.raises(CpioError, match="g: begun while f lacks 1 bytes"):
        cpio.file("g", 0o644, b"")
    with pytest.raises(CpioError, match="lacks 1 bytes"):
        cpio.trailer()
    cpio.data(b"c")
    with pytest.raises(CpioError, match="no open file"):
        cpio.data(b"x")
    cpio.trailer()
    with pytest.raises(CpioError, match="after the trailer"):
        cpio.directory("late", 0o755)


def test_writer_refuses_bad_modes_and_devices() -> None:
    cpio, _ = writer()
    with pytest.raises(CpioError, match="permission bits"):
        cpio.directory("d", stat.S_IFDIR | 0o755)
    with pytest.raises(CpioError, match="'pipe'"):
        cpio.device("p", 0o600, "pipe", 1, 1)


def corrupt(archive: bytes, offset: int, replacement: bytes) -> io.BytesIO:
    return io.BytesIO(archive[:offset] + replacement + archive[offset + len(replacement) :])


def small_archive() -> bytes:
    cpio, out = writer()
    cpio.file("a", 0o644, b"hello")
    cpio.file("bb", 0o644, b"world")  # namesize 3: header+name needs padding
    cpio.trailer()
    return bytes(out)


SECOND = 112 + 8  # header+name of 'a' (112) + 'hello' padded to 8


@pytest.mark.parametrize(
    ("offset", "replacement", "message"),
    [
        (SECOND, b"070707", f"offset {SECOND}: bad cpio magic"),
        (SECOND, b"070702", f"offset {SECOND}: cpio 'crc' format"),
        (SECOND + 6 + 8, b"0000G1A4", f"offset {SECOND}: field mode is not 8 hex digits"),
        (SECOND + 6 + 8 * 6, b" 0000005", f"offset {SECOND}: field filesize is not 8 hex digits"),
        (SECOND + 6 + 8 * 12, b"00000001", f"offset {SECOND}: check field"),
        (SECOND + 110 + 2, b"X", f"offset {SECOND}: name .* not NUL-terminated"),
        (SECOND + 110 + 3, b"X", f"offset {SECOND + 113}: non-NUL bytes in the padding after name 'bb'"),
        (112 + 5, b"\x01", "offset 117: non-NUL bytes in the padding after data of 'a'"),
    ],
)
def test_read_archive_rejects_corruption(offset: int, replacement: bytes, message: str) -> None:
    stream = corrupt(small_archive(), offset, replacement)
    with pytest.raises(CpioError, match=message):
        list(read_archive(stream))


def test_read_archive_reports_truncation_with_offset() -> None:
    archive = small_archive()
    with pytest.raises(CpioError, match=f"offset {SECOND + 116 + 2}: archive truncated in data of 'bb'"):
        list(read_archive(io.BytesIO(archive[: SECOND + 116 + 2])))
    with pytest.raises(CpioError, match="truncated in a header"):
        list(read_archive(io.BytesIO(archive[: SECOND + 116 + 8])))  # no trailer
    with pytest.raises(CpioError, match="offset 0: archive truncated in a header"):
        list(read_archive(io.BytesIO(b"")))


def test_entry_is_a_plain_record() -> None:
    (entry,) = list(read_archive(io.BytesIO(small_archive())))[:1]
    assert entry == CpioEntry("a", stat.S_IFREG | 0o644, 0, 0, 1, 1, 1, 5, 0, 0, b"hello", 0)


def test_read_archive_can_pass_over_file_data() -> None:
    """The self-check reads past contents it does not need; symlink targets still come back."""
    sink = io.BytesIO()
    writer = CpioWriter(sink.write)
    writer.file("big", 0o444, b"x" * 3_000_001)
    writer.symlink("link", b"big")
    writer.file("after", 0o444, b"tail")
    writer.trailer()
    sink.seek(0)
    entries = list(read_archive(sink, file_data=False))
    got = [(e.name, e.size, e.data) for e in entries]
    assert got == [("big", 3_000_001, b""), ("link", 3, b"big"), ("after", 4, b"")]
    assert sink.read() == b""
