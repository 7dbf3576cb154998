"""The x86 Linux boot protocol header of a bzImage (Documentation/arch/x86/boot.rst)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SECTOR = 0x200
MIN_HEAD = 0x1000  # enough for every header field; the version string may lie further in the setup code
_BOOT_FLAG = 0xAA55
_HDRS = b"HdrS"
_LOADED_HIGH = 0x01
_DEFAULT_INITRD_ADDR_MAX = 0x37FFFFFF  # the boot protocol's value before 2.03 stored its own
_DEFAULT_CMDLINE_SIZE = 255  # likewise before 2.06


class BzImageError(ValueError):
    """A file that is not an x86 bzImage, or is cut short."""


@dataclass(frozen=True)
class BzImageHeader:
    protocol: tuple[int, int]  # boot protocol version, e.g. (2, 15)
    version: str  # kernel version string, '' if absent or beyond the bytes given
    setup_sects: int
    loadflags: int
    loaded_high: bool  # loadflags bit 0: a bzImage, not a zImage
    initrd_addr_max: int  # highest address the initrd may end at
    xloadflags: int
    cmdline_size: int  # longest command line, without the NUL
    efi_stub: bool  # also a PE/COFF image UEFI firmware can start
    init_size: int = 0  # memory the kernel needs from its load address while it starts (0: not said, < 2.10)

    arch = "x86_64"  # builder/arch.py's name (the same field as an arm64 Image's header)

    def manifest_fields(self) -> dict[str, object]:
        """What manifest.json's inputs.kernel says of this header."""
        return {"bootProtocol": "{}.{:02d}".format(*self.protocol)}

    @property
    def release(self) -> str:
        """The release `uname -r` prints: '6.1.0-56-cloud-amd64'."""
        return release_of(self.version)

    @property
    def setup_size(self) -> int:
        return setup_size(self.setup_sects)


def release_of(version: str) -> str:
    """The first word of a kernel's version string (a bzImage's, an arm64 Image's banner): its release."""
    words = version.split()
    return words[0] if words else ""


def setup_size(setup_sects: int) -> int:
    """Bytes before the protected-mode kernel: the boot sector and setup_sects sectors of real-mode
    setup code (setup_sects 0 means 4), the header's byte at 0x1F1."""
    return ((setup_sects or 4) + 1) * SECTOR


def _u8(head: bytes, offset: int) -> int:
    return head[offset]


def _u16(head: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", head, offset)[0])


def _u32(head: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", head, offset)[0])


def _version_string(head: bytes, protocol: tuple[int, int]) -> str:
    pointer = _u16(head, 0x20E) if protocol >= (2, 0) else 0
    if not pointer:
        return ""
    start = pointer + SECTOR
    end = head.find(b"\0", start)
    if start >= len(head) or end < 0:
        return ""
    return head[start:end].decode("ascii", "replace")


def _has_efi_stub(head: bytes) -> bool:
    if not head.startswith(b"MZ"):
        return False
    pe_offset = _u32(head, 0x3C)
    return head[pe_offset : pe_offset + 4] == b"PE\0\0"


def read_header(head: bytes, *, name: str = "kernel") -> BzImageHeader:
    """Parse the header from the start of the image (at least the first 0x1000 bytes).

    The version string sits in the setup code, often past 0x1000: pass the whole setup area
    (read_header_file does) or it comes back ''.
    """
    if len(head) < MIN_HEAD:
        raise BzImageError(f"{name}: too short for an x86 bzImage ({len(head)} bytes, need {MIN_HEAD:#x})")
    if _u16(head, 0x1FE) != _BOOT_FLAG:
        raise BzImageError(f"{name}: not an x86 bzImage (no boot flag 0xAA55 at 0x1FE)")
    if head[0x202:0x206] != _HDRS:
        raise BzImageError(f"{name}: not an x86 bzImage (no HdrS magic at 0x202)")
    raw_protocol = _u16(head, 0x206)
    protocol = (raw_protocol >> 8, raw_protocol & 0xFF)
    loadflags = _u8(head, 0x211)
    if not loadflags & _LOADED_HIGH:
        raise BzImageError(f"{name}: a zImage, not a bzImage (loadflags {loadflags:#04x} at 0x211, no bit 0)")
    return BzImageHeader(
        protocol=protocol,
        version=_version_string(head, protocol),
        setup_sects=_u8(head, 0x1F1),
        loadflags=loadflags,
        loaded_high=True,
        initrd_addr_max=_u32(head, 0x22C) if protocol >= (2, 3) else _DEFAULT_INITRD_ADDR_MAX,
        xloadflags=_u16(head, 0x236) if protocol >= (2, 12) else 0,
        cmdline_size=_u32(head, 0x238) if protocol >= (2, 6) else _DEFAULT_CMDLINE_SIZE,
        efi_stub=_has_efi_stub(head),
        init_size=_u32(head, 0x260) if protocol >= (2, 10) else 0,
    )


def read_header_file(path: Path) -> BzImageHeader:
    """The header of the bzImage at path, reading the whole setup area so the version is found."""
    try:
        with open(path, "rb") as file:
            head = file.read(MIN_HEAD)
            if len(head) >= MIN_HEAD:
                # The version is inside the setup code.
                head += file.read(max(0, setup_size(head[0x1F1]) - len(head)))
    except OSError as error:
        raise BzImageError(f"{path}: cannot read kernel ({error.strerror})") from None
    return read_header(head, name=str(path))
