from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from support.codecs import decompress_member

from builder.formats.compress import DEFAULT_LEVELS, MAGICS, Compression, detect, parse_compression
from builder.formats.streams import CompressionError, open_compressor


def mixed_data(size_mib: int = 3, seed: int = 7) -> bytes:
    """Incompressible, repetitive and zero runs, like a store path's mix of binaries and text."""
    rng = random.Random(seed)
    parts = []
    for _ in range(size_mib):
        text = b"the quick brown fox " * 13107
        parts += [rng.randbytes(1 << 18), text, bytes(1 << 18), rng.randbytes(1 << 18)]
    return b"".join(parts)


DATA = mixed_data()


def compress(spec: str, data: bytes = DATA, *, threads: int = 1, chunk: int = 100_000) -> bytes:
    out = bytearray()
    compressor = open_compressor(parse_compression(spec), out.extend, threads=threads)
    for start in range(0, len(data), chunk):
        compressor.write(data[start : start + chunk])
    compressor.close()
    return bytes(out)


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is required for these tests"
    return path


def run(*command: str, data: bytes = b"") -> bytes:
    result = subprocess.run([tool(command[0]), *command[1:]], input=data, check=True, capture_output=True)
    return result.stdout


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("zstd", Compression("zstd", 10)),
        ("zstd:19", Compression("zstd", 19)),
        ("gzip", Compression("gzip", 9)),
        ("gzip:6", Compression("gzip", 6)),
        ("xz", Compression("xz", 6)),
        ("xz:0", Compression("xz", 0)),
        ("xz:9", Compression("xz", 9)),
        ("none", Compression("none", None)),
    ],
)
def test_parse_compression(spec: str, expected: Compression) -> None:
    assert parse_compression(spec) == expected
    assert str(expected) == (spec if ":" in spec or spec == "none" else f"{spec}:{DEFAULT_LEVELS[spec]}")


@pytest.mark.parametrize("spec", ["lz4", "zstd:0", "zstd:20", "gzip:0", "gzip:10", "xz:10", "xz:-1", "zstd:",
                                  "zstd:x", "none:1", "", "ZSTD"])
def test_parse_compression_rejects(spec: str) -> None:
    with pytest.raises(CompressionError, match=re.escape("choose zstd[:1-19], gzip[:1-9], xz[:0-9] or none")):
        parse_compression(spec)


def test_zstd_output_is_identical_for_any_thread_count() -> None:
    assert compress("zstd", threads=1) == compress("zstd", threads=4) == compress("zstd", threads=0)


def test_zstd_is_one_checksummed_frame_the_cli_decodes(tmp_path: Path) -> None:
    member = compress("zstd:19", threads=2)
    assert member[:4] == MAGICS["zstd"]
    params = zstandard.get_frame_parameters(member)
    assert params.has_checksum and params.window_size <= 128 << 20
    path = tmp_path / "member.zst"
    path.write_bytes(member)
    listing = run("zstd", "-lv", str(path)).decode()
    assert "# Zstandard Frames: 1" in listing and "XXH64" in listing
    assert run("zstd", "-d", "-c", str(path)) == DATA


def test_gzip_member_has_no_name_and_zero_mtime() -> None:
    member = compress("gzip:6")
    assert member[:3] == b"\x1f\x8b\x08"
    assert member[3] == 0  # FLG: no FNAME, FCOMMENT, FEXTRA
    assert member[4:8] == b"\0\0\0\0"  # MTIME
    assert run("gzip", "-d", "-c", data=member) == DATA


def test_xz_uses_crc32_and_the_cli_decodes(tmp_path: Path) -> None:
    member = compress("xz:1")
    path = tmp_path / "member.xz"
    path.write_bytes(member)
    listing = run("xz", "--robot", "--list", str(path)).decode()
    (file_line,) = [line.split("\t") for line in listing.splitlines() if line.startswith("file\t")]
    assert file_line[1] == "1" and file_line[6] == "CRC32"  # one stream, CRC32 check
    assert run("xz", "-d", "-c", str(path)) == DATA


def test_none_passes_through() -> None:
    assert compress("none") == DATA


@pytest.mark.parametrize("spec", ["zstd:3", "gzip:1", "xz:0"])
def test_output_is_deterministic_across_runs_and_processes(spec: str) -> None:
    data = DATA[: 1 << 20]
    here = compress(spec, data)
    assert compress(spec, data, chunk=4096) == here  # chunking must not matter either
    script = (
        "import sys; from builder.formats.compress import parse_compression\n"
        "from builder.formats.streams import open_compressor\n"
        f"c = open_compressor(parse_compression({spec!r}), sys.stdout.buffer.write, threads=3)\n"
        "c.write(sys.stdin.buffer.read()); c.close()"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", script], input=data, check=True, capture_output=True,
                           cwd=Path(__file__).parents[2], env=env).stdout
    assert other == here


@pytest.mark.parametrize("name", ["zstd", "gzip", "xz"])
def test_decompress_member_reports_consumed_bytes(name: str) -> None:
    first, second = compress(name, b"first" * 1000), compress(name, b"second" * 999)
    stream = first + second + b"\0\0\0\0"
    plain, used = decompress_member(name, stream)
    assert (plain, used) == (b"first" * 1000, len(first))
    plain, used = decompress_member(name, stream[used:])
    assert (plain, used) == (b"second" * 999, len(second))


def test_decompress_member_reads_cli_output() -> None:
    zst = run("zstd", "-c", data=b"cli")
    assert decompress_member("zstd", zst + b"x") == (b"cli", len(zst))
    gz = run("gzip", "-n", "-c", data=b"cli")
    assert decompress_member("gzip", gz + b"tail") == (b"cli", len(gz))
    xz = run("xz", "--check=crc32", "-c", data=b"cli")
    assert decompress_member("xz", xz) == (b"cli", len(xz))


@pytest.mark.parametrize("name", ["zstd", "gzip", "xz"])
def test_decompress_member_rejects_truncated_and_garbage(name: str) -> None:
    member = compress(name, b"data" * 5000)
    with pytest.raises(CompressionError, match=f"{name}: truncated"):
        decompress_member(name, member[:-6])
    with pytest.raises(CompressionError, match=name):
        decompress_member(name, b"\0" * 64)


def test_decompress_member_unsupported() -> None:
    with pytest.raises(CompressionError, match="lz4: decompression not supported"):
        decompress_member("lz4", b"\x02\x21\x4c\x18")


def test_detect_real_tool_output() -> None:
    cpio_archive = run("cpio", "-o", "-H", "newc", data=b"")
    assert detect(cpio_archive) == "cpio"
    assert detect(b"070702" + b"0" * 104) == "cpio"
    assert detect(run("zstd", "-c", data=b"x")) == "zstd"
    assert detect(run("gzip", "-c", data=b"x")) == "gzip"
    assert detect(run("xz", "-c", data=b"x")) == "xz"
    assert detect(run("lz4", "-l", "-c", data=b"x")) == "lz4"
    assert detect(run("xz", "--format=lzma", "-c", data=b"x")) == "lzma"
    assert detect(run("bzip2", "-c", data=b"x")) == "bzip2"
    assert detect(MAGICS["lzo"] + b"\0\r\n") == "lzo"
    assert detect(b"\0\0\0\0") is None
    assert detect(b"") is None
    assert detect(b"\x1f") is None  # a prefix of a magic is not the magic


def test_write_after_close_fails() -> None:
    compressor = open_compressor(parse_compression("gzip"), lambda _: None)
    compressor.close()
    with pytest.raises(CompressionError, match="after close"):
        compressor.write(b"x")
