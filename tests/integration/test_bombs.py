"""Decompression bombs and their kin: `netbuild inspect` on a small crafted initrd that would unpack
to gigabytes, name a 4 GiB file name or hold millions of entries ends with one `error:` line, in
seconds and bounded memory (measured in the child: peak RSS through RUSAGE_CHILDREN)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from builder.formats.compress import CODECS

TIME_LIMIT_S = 10.0
RSS_LIMIT_KB = 500 * 1024
PROBE = """
import json, resource, subprocess, sys, time
start = time.monotonic()
proc = subprocess.run(sys.argv[1:], capture_output=True)
print(json.dumps({"status": proc.returncode, "stderr": proc.stderr.decode(errors="replace"),
                  "seconds": time.monotonic() - start,
                  "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def inspect(path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    """`python -m builder inspect PATH` in a child of a fresh probe process: its status, stderr,
    seconds and peak RSS alone (not the test runner's other children's)."""
    out = subprocess.run([sys.executable, "-c", PROBE, sys.executable, "-m", "builder", "inspect", str(path), *args],
                         capture_output=True, check=True, timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def header(name: bytes, mode: int, filesize: int, namesize: int | None = None) -> bytes:
    namesize = len(name) + 1 if namesize is None else namesize
    fields = [1, mode, 0, 0, 1, 1, filesize, 0, 0, 0, 0, namesize, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def zstd_rle_frame(prefix: bytes, zeros_blocks: int) -> bytes:
    """A zstd frame by hand: one raw block of prefix, then RLE blocks of 128 KiB of zeros each
    (4 bytes apiece: a frame unpacking to gigabytes in kilobytes), no content size, no checksum."""
    frame = b"\x28\xb5\x2f\xfd" + bytes([0x00, 0x70])  # magic; descriptor: no size, no checksum; window 16 MiB
    frame += struct.pack("<I", (len(prefix) << 3) | (0 << 1) | 0)[:3] + prefix  # raw block
    block = 128 << 10
    for index in range(zeros_blocks):
        last = 1 if index == zeros_blocks - 1 else 0
        frame += struct.pack("<I", (block << 3) | (1 << 1) | last)[:3] + b"\0"
    return frame


def compressed(tool: list[str], prefix: bytes, zeros: int) -> bytes:
    proc = subprocess.Popen(tool, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    import threading

    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    proc.stdin.write(prefix)
    piece = b"\0" * (1 << 20)
    for _ in range(zeros >> 20):
        proc.stdin.write(piece)
    proc.stdin.close()
    reader.join()
    assert proc.wait() == 0
    return chunks[0]


def assert_one_error(result: dict, expected: str | None = None) -> None:  # type: ignore[type-arg]
    stderr = result["stderr"]
    assert result["status"] == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    if expected is not None:
        assert expected in stderr, stderr
    assert result["seconds"] < TIME_LIMIT_S, result
    assert result["rss_kb"] < RSS_LIMIT_KB, result
    print(f"{result['seconds']:.2f} s, {result['rss_kb'] // 1024} MiB peak: {stderr.strip()[:160]}")


BIG_FILE = header(b"big", 0o100644, 0xFFFFFFFF)  # a regular file of 4 GiB - 1: its data is the bomb


def test_a_zstd_frame_of_gigabytes_of_zeros_reaches_the_limit(tmp_path: Path) -> None:
    # 40,000 RLE blocks: 5 GiB of zeros in 160 KB; a cpio of files of 4 GiB each, back to back.
    bomb = zstd_rle_frame(BIG_FILE, 40_000)
    (tmp_path / "initrd").write_bytes(bomb)
    assert len(bomb) < 200_000
    assert_one_error(inspect(tmp_path / "initrd"), "limit reached")


@pytest.mark.parametrize("codec", ["gzip", "xz", "bzip2", "lz4", "zstd"])
def test_a_member_of_zeros_behind_a_4_gib_file_header_ends_in_one_line(tmp_path: Path, codec: str) -> None:
    tools = {"gzip": ["gzip", "-1", "-c"], "xz": ["xz", "-0", "--check=crc32", "-c"], "bzip2": ["bzip2", "-1", "-c"],
             "lz4": ["lz4", "-l", "-q", "-c"], "zstd": ["zstd", "-1", "-q", "-c"]}
    zeros = 64 << 20 if codec in ("xz", "bzip2") else 512 << 20  # what each tool makes in a second or two
    data = compressed(tools[codec], BIG_FILE, zeros)
    assert CODECS[codec].name == codec
    (tmp_path / "initrd").write_bytes(data)
    assert_one_error(inspect(tmp_path / "initrd"))


def test_a_4_gib_namesize_is_refused_before_it_is_read(tmp_path: Path) -> None:
    bomb = zstd_rle_frame(header(b"x", 0o100644, 0, namesize=0xFFFFFFFF)[:110], 40_000)
    (tmp_path / "initrd").write_bytes(bomb)
    assert_one_error(inspect(tmp_path / "initrd"), "PATH_MAX")
    plain = header(b"x", 0o100644, 0, namesize=0xFFFFFFFF)[:110]  # and uncompressed, tiny
    (tmp_path / "plain").write_bytes(plain)
    assert_one_error(inspect(tmp_path / "plain"), "PATH_MAX")


def test_a_symlink_target_of_gigabytes_is_refused(tmp_path: Path) -> None:
    bomb = zstd_rle_frame(header(b"link", 0o120777, 0xFFFFFFFF), 40_000)
    (tmp_path / "initrd").write_bytes(bomb)
    assert_one_error(inspect(tmp_path / "initrd"), "limit reached")


@pytest.mark.parametrize("members_only", [False, True])
def test_three_million_entries_in_a_small_zstd_member(tmp_path: Path, members_only: bool) -> None:
    import zstandard

    entry = header(b"nix/store/f", 0o100644, 0)
    plain = entry * 3_000_000 + header(b"TRAILER!!!", 0, 0)
    data = zstandard.ZstdCompressor(level=1).compress(plain)
    assert len(data) < 50 << 20
    (tmp_path / "initrd").write_bytes(data)
    args = ["--members"] if members_only else []
    assert_one_error(inspect(tmp_path / "initrd", *args), "entries")


def test_members_only_keeps_no_entries(tmp_path: Path) -> None:
    import zstandard

    plain = header(b"f", 0o100644, 0) * 500_000 + header(b"TRAILER!!!", 0, 0)
    (tmp_path / "initrd").write_bytes(zstandard.ZstdCompressor(level=1).compress(plain))
    result = inspect(tmp_path / "initrd", "--members")
    assert result["status"] == 0, result
    assert result["rss_kb"] < 120 * 1024, result  # 500,000 entries kept would be far more

