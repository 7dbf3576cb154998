"""Read a whole initrd back in tests: every member (plain or compressed) and the entries of each."""

from __future__ import annotations

import io

from builder.formats.compress import decompress_member, detect
from builder.formats.cpio import CpioEntry, read_archive


def initrd_members(data: bytes) -> list[tuple[str, list[CpioEntry]]]:
    """(codec, entries) for each archive of a concatenated initrd, in order."""
    members = []
    offset = 0
    while offset < len(data):
        if data[offset] == 0:  # NUL padding between members is allowed
            offset += 1
            continue
        codec = detect(data[offset : offset + 8])
        if codec == "cpio":
            stream = io.BytesIO(data[offset:])
            entries = list(read_archive(stream))
            offset += stream.tell()
        elif codec is not None:
            plain, used = decompress_member(codec, data[offset:])
            entries = list(read_archive(io.BytesIO(plain)))
            offset += used
        else:
            raise AssertionError(f"offset {offset}: neither cpio nor a known compressor")
        members.append((codec, entries))
    return members


def initrd_entries(data: bytes) -> dict[str, CpioEntry]:
    """Every entry by name, later members overriding earlier ones as the kernel does; in order."""
    entries: dict[str, CpioEntry] = {}
    for _codec, member in initrd_members(data):
        for entry in member:
            entries.pop(entry.name, None)
            entries[entry.name] = entry
    return entries
