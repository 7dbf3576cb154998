"""builder.formats.initrd: the one member scanner, on initrds made by the real tools the way
distributions make them (GNU cpio, every codec, an uncompressed early-microcode archive first, NUL
padding), on netbuild's own members, and as the stage 1 reader and the self-check use it."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest
from test_stage1_toplevel import gnu_cpio

from builder.formats.compress import CODECS, NONE, parse_compression
from builder.formats.cpio import CpioWriter
from builder.formats.initrd import InitrdReader, Member, open_member
from builder.formats.streams import ByteRange, CompressionError
from builder.stage1.toplevel import read_members
from builder.writers.frames import single_member

TOOLS = {
    "zstd": ["zstd", "-q", "-c"], "gzip": ["gzip", "-n", "-c"], "xz": ["xz", "--check=crc32", "-c"],
    "lzma": ["xz", "--format=lzma", "-c"], "bzip2": ["bzip2", "-c"], "lz4": ["lz4", "-l", "-q", "-c"],
    "lzo": ["lzop", "-c"],
}


def pack(command: list[str], data: bytes) -> bytes:
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


@pytest.fixture
def archives(tmp_path: Path) -> tuple[bytes, bytes]:
    """(an early-microcode archive, a main archive), as GNU cpio makes them: NULs to 512-byte blocks."""
    return (gnu_cpio(tmp_path / "ucode", {"kernel/x86/microcode/GenuineIntel.bin": b"\x01" * 3000}),
            gnu_cpio(tmp_path / "main", {"init": b"#!/bin/sh\n", "lib/data": bytes(range(256)) * 500}))


def plain_length(archive: bytes) -> int:
    """Where GNU cpio's archive ends: after the trailer's padding, before its block's NULs."""
    return archive.index(b"TRAILER!!!\0") + len(b"TRAILER!!!\0\0\0\0")


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_microcode_then_a_member_of_each_codec(tmp_path: Path, archives: tuple[bytes, bytes], name: str) -> None:
    microcode, main_archive = archives
    packed = pack(TOOLS[name], main_archive)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(microcode + b"\0" * 512 + packed + b"\0" * 3)
    with open(initrd, "rb") as f:
        reader = InitrdReader(f)
        found = []
        for member in reader:
            names = [entry.name for archive in member.archives() for entry in archive]
            member.finish()
            found.append((member.index, member.offset, member.size, member.kind, member.plain_size, names))
    assert found == [
        (0, 0, plain_length(microcode), "cpio", plain_length(microcode),
         [".", "kernel", "kernel/x86", "kernel/x86/microcode", "kernel/x86/microcode/GenuineIntel.bin"]),
        (1, len(microcode) + 512, len(packed), name, len(main_archive), [".", "init", "lib", "lib/data"]),
    ]
    assert reader.padding == len(microcode) - plain_length(microcode) + 512 + 3


def test_several_archives_in_one_stream_and_the_crc_variant(archives: tuple[bytes, bytes]) -> None:
    main_archive = archives[1]
    crc = main_archive.replace(b"070701", b"070702")  # the "crc" variant (its checksums are not read)
    # The first member, still unread: asking for the next would read it to its end first.
    member = next(iter(InitrdReader(pack(TOOLS["gzip"], main_archive + b"\0" * 100 + crc))))
    archives = [[entry.name for entry in archive] for archive in member.archives(accept_crc=True)]
    assert archives == [[".", "init", "lib", "lib/data"]] * 2


def test_what_the_kernel_rejects_is_reported_not_read(archives: tuple[bytes, bytes]) -> None:
    main_archive = archives[1]
    (unknown,) = InitrdReader(b"\0" * 8 + b"placeholder\n" + main_archive)
    assert (unknown.offset, unknown.kind, unknown.codec, unknown.head) == (8, None, None, b"placehol")
    gz = pack(TOOLS["gzip"], main_archive)
    gap = 4 - len(gz) % 4 + 1  # a plain archive right after it, off the 4-byte grid
    members = []
    for member in InitrdReader(gz + b"\0" * gap + main_archive):
        members.append((member.offset, member.kind, member.misaligned))
        member.finish()
    assert members == [(0, "gzip", False), (len(gz) + gap, "cpio", True)]


def test_a_damaged_member_fails_while_it_is_read(archives: tuple[bytes, bytes]) -> None:
    main_archive = archives[1]
    member = next(iter(InitrdReader(pack(TOOLS["zstd"], main_archive)[:-20])))
    with pytest.raises(CompressionError, match=r"^zstd: truncated frame"):
        member.finish()


def writer_members(comps: list[str]) -> tuple[bytes, list[Member]]:
    """Members made by the initrd writer, one per codec, back to back with NUL padding between."""
    sink = io.BytesIO()
    members = []
    for index, name in enumerate(comps):
        def fill(cpio: CpioWriter, index: int = index) -> None:
            cpio.directory("nix", 0o755)
            cpio.file(f"nix/file{index}", 0o444, bytes(range(256)) * (index + 1) * 1000)

        sink.write(b"\0" * (-sink.tell() % 4 + 4 * index))
        offset = sink.tell()
        frame = single_member(parse_compression(name), sink, fill)
        members.append(Member(role="store", offset=offset, compression=name, **{
            "size": frame.size, "plain_size": frame.plain_size, "plain_sha256": frame.plain_sha256,
            "entries": frame.entries, "sha256": frame.sha256}))
    return sink.getvalue(), members


def test_the_scanner_finds_the_members_the_writer_made() -> None:
    data, written = writer_members(["none", "zstd", "gzip", "xz", "none"])
    found = []
    for member in InitrdReader(data, digests=True):
        entries = sum(1 for _ in member.entries())
        assert member.rest_is_padding()
        found.append(member.record("store", entries))
    assert found == [Member(**{**m.__dict__, "sha256": None}) for m in written]


def test_a_member_opened_where_the_manifest_says(archives: tuple[bytes, bytes]) -> None:
    main_archive = archives[1]
    data, written = writer_members(["zstd", "none"])
    for member in written:
        opened = open_member(data, member.offset, size=member.size, digests=True,
                             codec=NONE if member.compression == "none" else None)
        assert sum(1 for _ in opened.entries()) == member.entries
        assert opened.rest_is_padding() and not opened.bytes_after_stream()
        assert (opened.size, opened.plain_size, opened.plain_sha256, opened.sha256) == (
            member.size, member.plain_size, member.plain_sha256, member.sha256)
    zstd = written[0]
    longer = open_member(data, zstd.offset, size=zstd.size + 4)  # over the padding after it
    longer.finish()
    assert longer.bytes_after_stream()
    padded = open_member(main_archive + b"junk", 0, size=len(main_archive) + 4, codec=NONE)
    assert sum(1 for _ in padded.entries()) == 4
    assert not padded.rest_is_padding()


def test_it_reads_a_toplevels_stage_1_as_read_members_does(tmp_path: Path, archives: tuple[bytes, bytes]) -> None:
    """The records it gives are read_members' (builder/stage1/toplevel.py), which it can replace."""
    microcode, main_archive = archives
    for codecs in (["zstd"], ["gzip", "xz"], ["xz", "zstd", "gzip"]):
        initrd = tmp_path / "initrd"
        initrd.write_bytes(microcode + b"".join(pack(TOOLS[c], main_archive) + b"\0" * 6 for c in codecs))
        with open(initrd, "rb") as f:
            records = []
            for member in InitrdReader(f, digests=True):
                records.append(member.record("stage1", sum(1 for _ in member.entries())))
        assert records == read_members(initrd, "test")
        assert [r.compression for r in records] == ["none", *codecs]


def test_byte_ranges_never_move_the_files_position(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(100)))
    with open(path, "rb") as f:
        f.seek(7)
        window = ByteRange(f, 10, 20, digest=hashlib.sha256())
        assert (window.read_at(5, 3), window.read(4), window.read(100), len(window)) == (
            bytes([15, 16, 17]), bytes(range(10, 14)), bytes(range(14, 30)), 20)
        assert window.digest.hexdigest() == hashlib.sha256(bytes(range(10, 30))).hexdigest()
        assert f.tell() == 7
        inner = ByteRange(window, 15)
        assert (len(inner), inner.read()) == (5, bytes(range(25, 30)))
    assert set(CODECS) >= set(TOOLS)
