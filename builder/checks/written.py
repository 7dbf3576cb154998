"""The build's self-check for members the writer already checked as it made them.

The initrd writer decompresses and parses every member right after compressing it (for a cached
group: when the group was first built) and records the sha256 of its bytes. What is left to prove
is that the file on disk holds exactly those bytes, in that order, and nothing else: one
sequential read, which also yields the file's own digest for SHA256SUMS. For members copied from
the cache this read is also the cache's integrity check: a member whose bytes differ is reported
with the others (DamagedMembers), so that the build can drop those entries and write again.
`netbuild check OUT` still decompresses everything (selfcheck.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from builder.errors import NetbuildError
from builder.writers.members import Member

_CHUNK = 4 << 20


class DamagedMembers(NetbuildError):
    """Members whose bytes on disk differ from the sha256 recorded for them."""

    def __init__(self, message: str, members: list[Member]) -> None:
        super().__init__(message)
        self.members = members


def check_written_members(path: Path, members: Sequence[Member]) -> tuple[int, str]:
    """Confirm path is exactly the members' bytes; return the file's (size, sha256)."""
    whole = hashlib.sha256()
    offset = 0
    damaged: list[tuple[str, Member]] = []
    buffers = [bytearray(_CHUNK), bytearray(_CHUNK)]  # reused, alternately: no allocation per chunk
    # The member's digest and the file's are computed side by side (hashlib releases the GIL).
    with open(path, "rb") as f, ThreadPoolExecutor(max_workers=1) as helper:
        for index, member in enumerate(members):
            where = f"self-check: {path.name}: member {index} ({member.role}) at {member.offset}"
            if member.sha256 is None:
                raise NetbuildError(f"{where}: the writer recorded no digest to check against")
            if member.offset != offset:
                raise NetbuildError(f"{where}: expected at {offset}")
            digest = hashlib.sha256()
            remaining = member.size
            while remaining:
                view = memoryview(buffers[0])[: min(_CHUNK, remaining)]
                got = f.readinto(view)
                if not got:
                    raise NetbuildError(f"{where}: the file ends {remaining} bytes early")
                pending = helper.submit(digest.update, view[:got])
                whole.update(view[:got])
                pending.result()
                buffers.reverse()
                remaining -= got
            if digest.hexdigest() != member.sha256:
                damaged.append((where, member))
            offset += member.size
        if f.read(1):
            raise NetbuildError(f"self-check: {path.name}: bytes after the last member")
    if damaged:
        where, _ = damaged[0]
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise DamagedMembers(f"{where}: the bytes on disk differ from those checked when written{more}",
                             [member for _, member in damaged])
    return offset, whole.hexdigest()
