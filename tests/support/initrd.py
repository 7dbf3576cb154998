"""Read a whole initrd back in tests: every member (plain or compressed) and the entries of each,
found by the same scanner as `netbuild inspect` (builder/formats/initrd.py); and the build's own
check of written members, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from builder.checks.written import WrittenCheck
from builder.formats.cpio import CpioEntry
from builder.formats.initrd import InitrdReader, Member


def initrd_members(data: bytes) -> list[tuple[str, list[CpioEntry]]]:
    """(codec, entries) for each archive of a concatenated initrd, in order ('cpio' for a plain one)."""
    members = []
    for member in InitrdReader(data):
        if member.kind is None:
            raise AssertionError(f"offset {member.offset}: neither cpio nor a known compressor")
        members.append((member.kind, list(member.entries(file_data=True))))
    return members


def initrd_entries(data: bytes) -> dict[str, CpioEntry]:
    """Every entry by name, later members overriding earlier ones as the kernel does; in order."""
    entries: dict[str, CpioEntry] = {}
    for _codec, member in initrd_members(data):
        for entry in member:
            entries.pop(entry.name, None)
            entries[entry.name] = entry
    return entries


def check_written_members(path: Path, members: Sequence[Member]) -> tuple[int, str]:
    """Confirm path is exactly the members' bytes, as the build does; return the file's (size, sha256)."""
    with WrittenCheck(path) as check:
        return check.finish(members)
