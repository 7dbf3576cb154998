"""The arm64 Image header and the kernel-image dispatch (builder/formats/arm64image.py, kernel.py):
a header as booting.rst lays it out, its version from the banner, Image.gz unpacked within a
bound, and every other kind of file refused in one message naming it. file(1) is the independent
reader of the headers made here."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from builder.formats.arm64image import COMMAND_LINE_SIZE
from builder.formats.kernel import MAX_IMAGE, KernelImageError, read_kernel

BANNER = b"Linux version 6.1.0-57-cloud-arm64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP Debian 6.1.192-3\n"


def image(*, efi: bool = True, flags: int = 0b010, size: int = 0x1AB0000, banner: bytes = BANNER,
          body: int = 0x2000) -> bytes:
    """An arm64 Image: its 64-byte header (booting.rst), then a body holding the kernel's banner."""
    code0 = b"MZ@\xfa" if efi else b"\x00\x00\x00\x14"  # an EFI stub's "MZ" is also an instruction
    head = code0 + b"\0" * 4 + struct.pack("<QQQ", 0, size, flags) + b"\0" * 0x18 + b"ARM\x64" + b"\0" * 4
    assert len(head) == 0x40
    data = bytearray(head + b"\0" * body)
    # A banner-like string without a release first, as the kernel has in other messages.
    data[0x100 : 0x100 + 20] = b"Linux version %s\0\0\0"[:20]
    data[0x800 : 0x800 + len(banner)] = banner
    return bytes(data)


def file_description(path: Path) -> str:
    return subprocess.run(["file", "-b", str(path)], check=True, capture_output=True, text=True).stdout


def test_the_header_of_an_image(tmp_path: Path) -> None:
    path = tmp_path / "Image"
    path.write_bytes(image())
    assert file_description(path).startswith("Linux kernel ARM64 boot executable Image, little-endian, 4K pages")
    found = read_kernel(path)
    assert found.unpacked is None  # shipped as it is
    header = found.header
    assert header.arch == "aarch64" and header.efi_stub and header.page_size == "4K"
    assert header.release == "6.1.0-57-cloud-arm64"
    assert header.version.startswith("6.1.0-57-cloud-arm64 (debian-kernel@") and "\n" not in header.version
    assert header.init_size == 0x1AB0000 and header.cmdline_size == COMMAND_LINE_SIZE - 1
    assert header.manifest_fields() == {"arch": "aarch64", "imageSize": 0x1AB0000}
    assert not read_kernel(_write(tmp_path / "plain", image(efi=False))).header.efi_stub


def test_an_image_gz_is_unpacked(tmp_path: Path) -> None:
    plain = image()
    found = read_kernel(_write(tmp_path / "Image.gz", gzip.compress(plain, mtime=0)))
    assert found.unpacked == plain and found.header.release == "6.1.0-57-cloud-arm64"


@pytest.mark.parametrize(("data", "message"), [
    (image(flags=0b011), r"k: a big-endian arm64 kernel"),
    (gzip.compress(b"not a kernel" * 100), r"k: a gzip file that holds no arm64 Image"),
    (gzip.compress(image())[:-100], r"k: broken gzip \(gzip: truncated member\)"),
    (gzip.compress(image())[:-8] + b"\0" * 8, r"k: broken gzip \(.*incorrect data check"),  # its CRC
    (b"MZ\0\0zimg" + b"\0" * 0x100, r"k: an EFI zboot kernel .*pass the kernel's plain Image with --kernel"),
    (b"\x7fELF" + b"\0" * 0x2000, r"k: not an x86 bzImage .* nor an arm64 Image \(no magic ARM\\x64 at 0x38\)"),
])
def test_what_is_refused(data: bytes, message: str, tmp_path: Path) -> None:
    with pytest.raises(KernelImageError, match=message):
        read_kernel(_write(tmp_path / "k", data), name="k")


def test_a_gzip_bomb_stops_at_the_bound(tmp_path: Path) -> None:
    # MAX_IMAGE + 1 MiB of zeros is a few hundred KiB of gzip: refused after MAX_IMAGE + 1 bytes.
    compressor = gzip.GzipFile(tmp_path / "bomb.gz", "wb", compresslevel=1, mtime=0)
    zeros = b"\0" * (1 << 20)
    with compressor:
        compressor.write(image())
        for _ in range(MAX_IMAGE >> 20):
            compressor.write(zeros)
    with pytest.raises(KernelImageError, match=rf"bomb.gz: unpacks to more than {MAX_IMAGE >> 20} MiB"):
        read_kernel(tmp_path / "bomb.gz")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
