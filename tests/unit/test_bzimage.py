from __future__ import annotations

import glob
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from builder.formats.bzimage import BzImageError, read_header, read_header_file


def debian_kernel() -> Path:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    assert kernels, "a Debian kernel in /boot is required (package linux-image-cloud-amd64)"
    return Path(kernels[-1])


def file_description(path: Path) -> str:
    file = shutil.which("file")
    assert file, "the file(1) tool is required for these tests"
    return subprocess.run([file, "-b", str(path)], check=True, capture_output=True, text=True).stdout


def test_debian_kernel_header() -> None:
    kernel = debian_kernel()
    header = read_header_file(kernel)
    described = file_description(kernel)
    # file(1) prints "version <the version string>, RO-rootFS, ..." from the same header pointer.
    match = re.search(r"version (.*?), (RO|RW)-rootFS", described)
    assert match, described
    assert header.version == match.group(1)
    assert header.release == kernel.name.removeprefix("vmlinuz-")
    assert header.protocol >= (2, 15)
    assert header.loaded_high and header.loadflags & 1
    assert header.efi_stub
    assert header.cmdline_size == 2047
    assert header.initrd_addr_max == 0x7FFFFFFF
    assert header.xloadflags & 0b10  # XLF_CAN_BE_LOADED_ABOVE_4G on a 64-bit kernel
    assert header.setup_sects == kernel.read_bytes()[0x1F1]


def test_first_page_alone_gives_everything_but_the_far_version() -> None:
    head = debian_kernel().read_bytes()[:0x1000]
    header = read_header(head)
    full = read_header_file(debian_kernel())
    pointer = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    assert header.version == ("" if pointer >= 0x1000 else full.version)
    assert (header.protocol, header.cmdline_size, header.efi_stub) == (full.protocol, full.cmdline_size, True)


def synthetic(protocol: int = 0x0202, loadflags: int = 1, version: bytes = b"") -> bytearray:
    head = bytearray(0x1000)
    struct.pack_into("<H", head, 0x1FE, 0xAA55)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, protocol)
    head[0x211] = loadflags
    head[0x1F1] = 4
    if version:
        struct.pack_into("<H", head, 0x20E, 0x600 - 0x200)
        head[0x600 : 0x600 + len(version) + 1] = version + b"\0"
    struct.pack_into("<I", head, 0x22C, 0x12345678)  # must be ignored before protocol 2.03
    struct.pack_into("<I", head, 0x238, 4096)  # must be ignored before protocol 2.06
    return head


def test_old_protocol_defaults() -> None:
    header = read_header(bytes(synthetic(version=b"2.6.0 (old)")))
    assert header.protocol == (2, 2)
    assert header.initrd_addr_max == 0x37FFFFFF and header.cmdline_size == 255 and header.xloadflags == 0
    assert (header.version, header.release, header.efi_stub) == ("2.6.0 (old)", "2.6.0", False)


def test_fields_honoured_from_their_protocol() -> None:
    header = read_header(bytes(synthetic(protocol=0x020C)))
    assert header.protocol == (2, 12)
    assert (header.initrd_addr_max, header.cmdline_size, header.version) == (0x12345678, 4096, "")


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"\0" * 0x1000, r"vmlinuz: not an x86 bzImage \(no boot flag 0xAA55 at 0x1FE\)"),
        (bytes(synthetic())[:0x200] + b"\0" * 0xE00, r"vmlinuz: not an x86 bzImage \(no HdrS magic at 0x202"),
        (bytes(synthetic(loadflags=0)), r"vmlinuz: a zImage, not a bzImage"),
        (bytes(synthetic())[:0x300], r"vmlinuz: too short"),
        (b"\x7fELF" + b"\0" * 0x2000, r"vmlinuz: not an x86 bzImage"),
    ],
)
def test_rejects_what_is_not_a_bzimage(head: bytes, message: str) -> None:
    with pytest.raises(BzImageError, match=message):
        read_header(head, name="vmlinuz")


def test_read_header_file_errors_name_the_path(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated"
    truncated.write_bytes(debian_kernel().read_bytes()[:0x800])
    with pytest.raises(BzImageError, match=f"{truncated}: too short"):
        read_header_file(truncated)
    with pytest.raises(BzImageError, match=f"{tmp_path / 'missing'}: cannot read kernel"):
        read_header_file(tmp_path / "missing")
