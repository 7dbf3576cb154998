"""Which kernel image a file is — an x86 bzImage or an arm64 Image (plain or gzipped) — and its
header: the one place that tells them apart, so that plan, self-check and `netbuild boot` agree.

Both header classes answer the same questions the checks ask (arch, release, version,
cmdline_size, initrd_addr_max, xloadflags, init_size, efi_stub, manifest_fields); KernelHeader is
either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.formats import CHUNK
from builder.formats.arm64image import Arm64ImageError, Arm64ImageHeader, is_arm64_image, is_zboot
from builder.formats.arm64image import read_header as read_arm64_header
from builder.formats.bzimage import BzImageError, BzImageHeader
from builder.formats.bzimage import read_header_file as read_bzimage_header_file
from builder.formats.compress import GZIP, detect
from builder.formats.streams import ByteRange, CompressionError

KernelHeader = BzImageHeader | Arm64ImageHeader
MAX_IMAGE = 256 << 20  # an arm64 Image is 20-60 MiB; more from an Image.gz is refused, not unpacked
_PEEK = 0x40


class KernelImageError(ValueError):
    """Not a kernel image netbuild can ship, or cut short; the message names the file."""


@dataclass(frozen=True)
class KernelImage:
    header: KernelHeader
    unpacked: bytes | None  # the Image inside an Image.gz; None: the file itself is shipped


def read_kernel(path: Path, *, name: str | None = None) -> KernelImage:
    """The header of the kernel at path; an Image.gz is unpacked (at most MAX_IMAGE bytes)."""
    name = name or str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK)
            if detect(head) == GZIP.name:
                image = _gunzip(f, name)
                if not is_arm64_image(image):
                    raise KernelImageError(f"{name}: a gzip file that holds no arm64 Image (no magic ARM\\x64 "
                                           "at 0x38 once unpacked)")
                return KernelImage(read_arm64_header(image, name=name), image)
            if is_zboot(head):
                raise KernelImageError(
                    f"{name}: an EFI zboot kernel (vmlinuz.efi, 'zimg' after MZ): only UEFI firmware can start "
                    "it, not QEMU's -kernel or U-Boot's booti; pass the kernel's plain Image with --kernel")
            if is_arm64_image(head):
                return KernelImage(read_arm64_header(head + f.read(), name=name), None)
    except OSError as e:
        raise KernelImageError(f"{name}: cannot read kernel ({e.strerror})") from None
    except Arm64ImageError as e:
        raise KernelImageError(str(e)) from None
    try:
        return KernelImage(read_bzimage_header_file(path), None)
    except BzImageError as e:
        raise KernelImageError(f"{e} nor an arm64 Image (no magic ARM\\x64 at 0x38)") from None


def read_kernel_header(path: Path) -> KernelHeader:
    return read_kernel(path).header


def _gunzip(stream: BinaryIO, name: str) -> bytes:
    # The codec table's reader (bounded memory, its own budget), stopped at MAX_IMAGE + 1 bytes
    # whatever the file claims: a gzip bomb costs MAX_IMAGE of memory at most.
    reader = GZIP.reader(ByteRange(stream))
    image = bytearray()
    try:
        while chunk := reader.read(CHUNK):  # to the member's end, where its CRC and length are checked
            image += chunk
            if len(image) > MAX_IMAGE:
                raise KernelImageError(f"{name}: unpacks to more than {MAX_IMAGE >> 20} MiB; not a kernel Image.gz")
    except CompressionError as e:
        raise KernelImageError(f"{name}: broken gzip ({e})") from None
    return bytes(image)
