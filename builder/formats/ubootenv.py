"""U-Boot's environment: the default one compiled into a U-Boot binary, and the image `saveenv`
writes to the flash it keeps the environment in (env/common.c, `env_t`, not redundant):

    0x00  crc   CRC32 of the data, little-endian
    0x04  data  "name=value" entries, each NUL-terminated, then one more NUL; the rest of the
                environment's size (CONFIG_ENV_SIZE) padded, with the CRC over all of it

An environment that loads replaces the default one whole: it must hold every default entry it
keeps (what saveenv stores). mkenvimage (u-boot-tools) writes the same bytes with `-p 0`.

The default environment is a C array of such NUL-terminated entries ending in an empty one; in a
binary it is found as the run of entries around "bootcmd=" (every U-Boot build that boots by
itself has one). No library reads either, and mkenvimage does not read a binary's.
"""

from __future__ import annotations

import re
import struct
import zlib

_NAME = re.compile(rb"[A-Za-z0-9_.:-]+")
_ENTRY = re.compile(rb"[A-Za-z0-9_.:-]+=[\x20-\x7e\t\n]*")


class UbootEnvError(ValueError):
    pass


def default_environment(firmware: bytes) -> dict[str, str]:
    """The default environment compiled into a U-Boot binary, in its order."""
    at = firmware.find(b"\0bootcmd=")
    if at < 0:
        raise UbootEnvError("no default environment (no bootcmd= entry) in the U-Boot binary")
    start = at + 1
    # Entries before bootcmd: walk back while the NUL-terminated string before is an entry.
    while True:
        previous = firmware.rfind(b"\0", 0, start - 1)
        candidate = firmware[previous + 1:start - 1]
        if previous < 0 or not candidate or not _ENTRY.fullmatch(candidate):
            break
        start = previous + 1
    end = firmware.find(b"\0\0", start)
    if end < 0:
        raise UbootEnvError("the U-Boot binary's default environment has no end")
    entries: dict[str, str] = {}
    for raw in firmware[start:end].split(b"\0"):
        name, _, value = raw.partition(b"=")
        entries[name.decode("ascii")] = value.decode("ascii")
    return entries


def environment_image(entries: dict[str, str], size: int) -> bytes:
    """The environment as saveenv stores it, `size` bytes (CONFIG_ENV_SIZE) with its CRC."""
    body = bytearray()
    for name, value in entries.items():
        if not _NAME.fullmatch(name.encode("ascii", "replace")) or "\0" in value:
            raise UbootEnvError(f"{name!r}: not a U-Boot environment entry")
        body += f"{name}={value}".encode("ascii") + b"\0"
    body += b"\0"
    if len(body) > size - 4:
        raise UbootEnvError(f"the environment needs {len(body) + 4} bytes, more than its {size}")
    data = bytes(body) + b"\0" * (size - 4 - len(body))
    return struct.pack("<I", zlib.crc32(data)) + data
