"""U-Boot's legacy image format (include/image.h, `struct legacy_img_hdr`), as mkimage writes it
for a script: `mkimage -A arm64 -O linux -T script -C none -n NAME -d boot.cmd boot.scr.uimg`.

    0x00  ih_magic  0x27051956        0x18  ih_dcrc  CRC32 of the data
    0x04  ih_hcrc   CRC32 of the header with this field 0
    0x08  ih_time   seconds since 1970 (netbuild: 0, what mkimage writes with SOURCE_DATE_EPOCH=0)
    0x0C  ih_size   bytes of data      0x1C  ih_os, ih_arch, ih_type, ih_comp: one byte each
    0x10  ih_load, 0x14 ih_ep: 0 for a script
    0x20  ih_name   32 bytes, NUL-padded
    0x40  data

All big-endian. A script is a "multi-file" image of one file: the data is a list of the files'
sizes ending in a 0 (u32 each, big-endian), then the file — what `source` reads it back by.
"""

from __future__ import annotations

import struct
import zlib

MAGIC = 0x27051956
HEADER_SIZE = 64
NAME_SIZE = 32
OS_LINUX = 5
ARCHES = {"arm64": 22, "x86_64": 24, "arm": 2}  # IH_ARCH_*: builder/arch.py's uboot_arch → number
TYPE_SCRIPT = 6
COMP_NONE = 0
_HEADER = struct.Struct(">IIIIIIIBBBB32s")


class UImageError(ValueError):
    """Not a legacy U-Boot image, or a broken one."""


def script_image(script: bytes, *, arch: str, name: str) -> bytes:
    """The legacy image holding a U-Boot script (the bytes of boot.cmd)."""
    encoded = name.encode()
    if len(encoded) >= NAME_SIZE:
        raise ValueError(f"a U-Boot image name has at most {NAME_SIZE - 1} bytes: {name!r}")
    data = struct.pack(">II", len(script), 0) + script
    fields = [MAGIC, 0, 0, len(data), 0, 0, zlib.crc32(data), OS_LINUX, ARCHES[arch], TYPE_SCRIPT, COMP_NONE,
              encoded]
    header_crc = zlib.crc32(_HEADER.pack(*fields))
    fields[1] = header_crc
    return _HEADER.pack(*fields) + data


def read_script(image: bytes) -> tuple[str, bytes]:
    """(name, script) of a script image, both CRCs checked: what U-Boot's `source` would run."""
    if len(image) < HEADER_SIZE:
        raise UImageError(f"too short for a U-Boot image ({len(image)} bytes)")
    fields = list(_HEADER.unpack_from(image))
    if fields[0] != MAGIC:
        raise UImageError(f"no U-Boot image magic (found {fields[0]:#010x})")
    header_crc, fields[1] = fields[1], 0
    if zlib.crc32(_HEADER.pack(*fields)) != header_crc:
        raise UImageError("the header's CRC does not match")
    data = image[HEADER_SIZE : HEADER_SIZE + fields[3]]
    if len(data) != fields[3] or zlib.crc32(data) != fields[6]:
        raise UImageError("the data's CRC or size does not match")
    if fields[9] != TYPE_SCRIPT:
        raise UImageError(f"not a script image (type {fields[9]})")
    size, end = struct.unpack_from(">II", data)
    if end != 0 or 8 + size > len(data):
        raise UImageError("a script image of more than one file")
    return fields[11].rstrip(b"\0").decode("utf-8", "replace"), data[8 : 8 + size]
