"""Reading a toplevel's own stage 1 as the members it is: archives made by GNU cpio (512-byte blocks,
as nixpkgs packs them) and compressed by the real tools, back to back, and what is refused."""

from __future__ import annotations

import bz2
import hashlib
import subprocess
from pathlib import Path

import pytest

from builder.errors import NetbuildError
from builder.stage1.toplevel import read_members


def gnu_cpio(root: Path, files: dict[str, bytes]) -> bytes:
    """A newc archive of files, made by GNU cpio the way nixpkgs' make-initrd-ng calls it."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    listing = subprocess.run("find . -print0 | LC_ALL=C sort -z", shell=True, cwd=root, capture_output=True,
                             check=True).stdout
    return subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "+0:+0", "--reproducible", "--null"],
                          input=listing, cwd=root, capture_output=True, check=True).stdout


def listed(archive: bytes) -> int:
    """Entries GNU cpio lists (it does not list the trailer)."""
    return len(subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True, check=True)
               .stdout.splitlines())


@pytest.fixture
def microcode(tmp_path: Path) -> bytes:
    return gnu_cpio(tmp_path / "ucode", {"kernel/x86/microcode/GenuineIntel.bin": b"\x01" * 3000})


@pytest.fixture
def main_archive(tmp_path: Path) -> bytes:
    return gnu_cpio(tmp_path / "main", {"init": b"#!/bin/sh\n", "lib/data": bytes(range(256)) * 50})


def test_microcode_then_zstd_archive(tmp_path: Path, microcode: bytes, main_archive: bytes) -> None:
    assert len(microcode) % 512 == 0 and len(main_archive) % 512 == 0  # GNU cpio's blocks
    compressed = subprocess.run(["zstd", "-q", "-19", "-c"], input=main_archive, capture_output=True,
                                check=True).stdout
    initrd = tmp_path / "initrd"
    initrd.write_bytes(microcode + compressed)
    plain, packed = read_members(initrd, "test")
    # The plain archive ends at its trailer's padding; the NULs of its last block lie between members.
    assert plain.compression == "none" and plain.offset == 0
    assert microcode[plain.size :].strip(b"\0") == b""
    assert microcode[: plain.size].endswith(b"TRAILER!!!\0\0\0\0")  # the name, its NUL, padding to 4
    assert plain.plain_sha256 == hashlib.sha256(microcode[: plain.size]).hexdigest()
    assert plain.entries == listed(microcode)
    # The compressed one reports its whole plain stream, padding included.
    assert (packed.offset, packed.size, packed.compression) == (len(microcode), len(compressed), "zstd")
    assert (packed.plain_size, packed.plain_sha256) == (len(main_archive), hashlib.sha256(main_archive).hexdigest())
    assert packed.entries == listed(main_archive)
    assert {plain.role, packed.role} == {"stage1"}


@pytest.mark.parametrize("command", [["gzip", "-n", "-c"], ["xz", "--check=crc32", "-c"]])
def test_gzip_and_xz_with_trailing_nuls(tmp_path: Path, main_archive: bytes, command: list[str]) -> None:
    compressed = subprocess.run(command, input=main_archive, capture_output=True, check=True).stdout
    initrd = tmp_path / "initrd"
    initrd.write_bytes(compressed + b"\0" * 7)
    (member,) = read_members(initrd, "test")
    assert (member.offset, member.size, member.plain_size) == (0, len(compressed), len(main_archive))


def test_refusals(tmp_path: Path, main_archive: bytes) -> None:
    initrd = tmp_path / "initrd"

    def refused(data: bytes) -> str:
        initrd.write_bytes(data)
        with pytest.raises(NetbuildError) as err:
            read_members(initrd, "label")
        return str(err.value)

    assert refused(bz2.compress(main_archive)) == (
        "label: archive at offset 0 is bzip2-compressed; netbuild reads back only zstd, gzip, xz and plain cpio, "
        "so it cannot check this stage 1 (rebuild it with another compressor)"
    )
    assert refused(b"placeholder\n") == "label: archive at offset 0: neither a cpio archive nor compressed data the " \
                                        "kernel knows"
    assert refused(b"") == "label: empty, or only NUL bytes: not a stage 1"
    two = subprocess.run(["zstd", "-q", "-c"], input=main_archive + main_archive, capture_output=True,
                         check=True).stdout
    assert "data after the cpio trailer inside the compressed stream" in refused(two)
    gz = subprocess.run(["gzip", "-n", "-c"], input=main_archive, capture_output=True, check=True).stdout
    unaligned = gz + b"\0" * (1 if len(gz) % 4 == 2 else (6 - len(gz) % 4) % 4 or 1)
    assert len(unaligned) % 4 != 0
    assert "must start at a multiple of 4" in refused(unaligned + main_archive)
    assert "truncated" in refused(gz[:-20])
