"""The arm64 Linux kernel Image header (Documentation/arch/arm64/booting.rst), and Image.gz.

    0x00  code0, code1      executable code (an EFI stub kernel's start with "MZ", the DOS magic)
    0x08  text_offset       u64 LE: where in a 2 MiB aligned region the image wants to be loaded
    0x10  image_size        u64 LE: the bytes the image occupies from there, bss included (0: < 3.17)
    0x18  flags             u64 LE: bit 0 big-endian, bits 1-2 page size (1 4K, 2 16K, 3 64K)
    0x38  magic             "ARM\\x64"
    0x3C  PE header offset  (EFI stub kernels)

The kernel's version is not in the header: it is the "Linux version …" banner inside the image
(which an arm64 Image holds uncompressed).

Image.gz — what some distributions install, and nixpkgs' kernelTarget on a few boards — is a gzip
of the Image. QEMU's -kernel unpacks it, U-Boot's booti only with kernel_comp_addr_r set, UEFI
firmware not at all: netbuild unpacks it (bounded, builder/formats/kernel.py) and ships the Image.
An EFI zboot image ("zimg" after its MZ) is refused: only UEFI can start it, and its payload would
need a decompressor per codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from builder.formats.bzimage import release_of

HEAD = 0x40  # the whole header
MAGIC = b"ARM\x64"
_MAGIC_OFFSET = 0x38
ZBOOT_MAGIC = b"zimg"  # at 4, after "MZ" and 2 bytes: linux/drivers/firmware/efi/libstub/zboot-header.S
COMMAND_LINE_SIZE = 2048  # arch/arm64/include/uapi/asm/setup.h
_BANNER = b"Linux version "
_BANNER_MAX = 512
_PAGE_SIZES = {0: "unspecified", 1: "4K", 2: "16K", 3: "64K"}
NO_INITRD_LIMIT = (1 << 64) - 1  # the arm64 boot protocol puts no address limit in the image


class Arm64ImageError(ValueError):
    """A file that is not an arm64 Image, or one netbuild does not ship."""


@dataclass(frozen=True)
class Arm64ImageHeader:
    text_offset: int
    image_size: int  # bytes from the load address the kernel needs, bss included
    flags: int
    efi_stub: bool  # also a PE/COFF program UEFI firmware can start (what a UKI's .linux needs)
    version: str  # the banner after "Linux version ", '' when none was found

    arch = "aarch64"
    # The fields the checks read off any kernel header (builder/formats/kernel.py):
    cmdline_size = COMMAND_LINE_SIZE - 1  # the longest command line, without the NUL
    initrd_addr_max = NO_INITRD_LIMIT
    xloadflags = 0  # an x86 notion

    @property
    def release(self) -> str:
        """What `uname -r` prints: '6.1.0-57-cloud-arm64'."""
        return release_of(self.version)

    @property
    def init_size(self) -> int:
        """Memory from the load address the kernel needs while it starts."""
        return self.image_size

    @property
    def big_endian(self) -> bool:
        return bool(self.flags & 1)

    @property
    def page_size(self) -> str:
        return _PAGE_SIZES[(self.flags >> 1) & 3]

    def manifest_fields(self) -> dict[str, object]:
        return {"arch": self.arch, "imageSize": self.image_size}


def is_arm64_image(head: bytes) -> bool:
    return head[_MAGIC_OFFSET : _MAGIC_OFFSET + 4] == MAGIC


def is_zboot(head: bytes) -> bool:
    return head.startswith(b"MZ") and head[4:8] == ZBOOT_MAGIC


def read_header(image: bytes, *, name: str = "kernel") -> Arm64ImageHeader:
    """The header of a whole (uncompressed) Image: the banner is searched in all of it."""
    if len(image) < HEAD:
        raise Arm64ImageError(f"{name}: too short for an arm64 Image ({len(image)} bytes, need {HEAD:#x})")
    if not is_arm64_image(image):
        raise Arm64ImageError(f"{name}: not an arm64 Image (no magic ARM\\x64 at {_MAGIC_OFFSET:#x})")
    text_offset, image_size, flags = struct.unpack_from("<QQQ", image, 0x08)
    header = Arm64ImageHeader(text_offset=text_offset, image_size=image_size, flags=flags,
                              efi_stub=image.startswith(b"MZ"), version=_banner(image))
    if header.big_endian:
        raise Arm64ImageError(f"{name}: a big-endian arm64 kernel; netbuild packs little-endian (aarch64) systems")
    return header


def _banner(image: bytes) -> str:
    # The first banner followed by a release (the string also appears in other messages).
    start = image.find(_BANNER)
    while start >= 0:
        end = start + len(_BANNER)
        text = image[end : end + _BANNER_MAX].split(b"\n", 1)[0].split(b"\0", 1)[0]
        if text[:1].isdigit():
            return text.decode("ascii", "replace").strip()
        start = image.find(_BANNER, end)
    return ""
