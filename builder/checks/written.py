"""The build's self-check for members the writer already checked as it made them.

The initrd writer decompresses and parses every member right after compressing it (for a cached
group: when the group was first built) and records the sha256 of its bytes. What is left to prove
is that the file on disk holds exactly those bytes, in that order, and nothing else — reading it
back, which also yields the file's own digest for SHA256SUMS. For members copied from the cache
this read is also the cache's integrity check: a member whose bytes differ is reported with the
others (DamagedMembers), so that the build can drop those entries and write again.
`netbuild check OUT` still decompresses everything (selfcheck.py).

The read need not wait for the writer to finish: WrittenCheck is told each member as soon as its
bytes are in the file, and hashes it on two threads of its own — one the members, one the whole
file — while the writer goes on. On a warm rebuild that overlaps the check with the copying.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from builder.errors import NetbuildError
from builder.formats import CHUNK
from builder.formats.initrd import Member


class DamagedMembers(NetbuildError):
    """Members whose bytes on disk differ from the sha256 recorded for them."""

    def __init__(self, message: str, members: list[Member]) -> None:
        super().__init__(message)
        self.members = members


def _where(path: Path, index: int, member: Member) -> str:
    return f"self-check: {path.name}: member {index} ({member.role}) at {member.offset}"


class WrittenCheck:
    """Checks path's members as they are announced with written(); finish() gives the verdict."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._announced: list[Member] = []
        self._ready = threading.Condition()
        self._closed = False
        self._damaged: list[int] = []
        self._failure: BaseException | None = None
        self._whole = hashlib.sha256()
        self._hashed_to = 0  # the whole-file digest covers [0, _hashed_to)
        # Daemons: an interrupt can land before close() is reached (even inside this constructor),
        # and read-only hashing must never keep the process from exiting.
        self._threads = [threading.Thread(target=self._guard, args=(work,), name=f"netbuild-check-{work.__name__}",
                                          daemon=True) for work in (self._hash_members, self._hash_file)]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> WrittenCheck:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def written(self, members: Sequence[Member]) -> None:
        """These members' bytes are in the file now (flushed), after the ones announced before."""
        with self._ready:
            self._announced.extend(members)
            self._ready.notify_all()

    def finish(self, members: Sequence[Member]) -> tuple[int, str]:
        """Confirm the file is exactly these members (the announced ones first) and nothing else;
        return its (size, sha256). Raises DamagedMembers when only some digests differ."""
        announced = len(self._announced)
        if list(members[:announced]) != self._announced:
            raise NetbuildError(f"self-check: {self._path.name}: the members differ from those announced")
        offset = 0
        for index, member in enumerate(members):
            where = _where(self._path, index, member)
            if member.sha256 is None:
                raise NetbuildError(f"{where}: the writer recorded no digest to check against")
            if member.offset != offset:
                raise NetbuildError(f"{where}: expected at {offset}")
            offset += member.size
        self.written(members[announced:])
        self.close()
        if self._failure is not None:
            raise self._failure
        if os.stat(self._path).st_size != offset:
            raise NetbuildError(f"self-check: {self._path.name}: bytes after the last member")
        if self._damaged:
            index = self._damaged[0]
            more = f" (and {len(self._damaged) - 1} more)" if len(self._damaged) > 1 else ""
            raise DamagedMembers(
                f"{_where(self._path, index, members[index])}: the bytes on disk differ from those checked when "
                f"written{more}", [members[i] for i in self._damaged])
        return offset, self._whole.hexdigest()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # --- the two threads ------------------------------------------------------------------------

    def _guard(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as e:  # reported by finish(), on the caller's thread
            self._failure = self._failure or e

    def _next(self, index: int) -> Member | None:
        """The index-th announced member, waiting for it; None once closed without it."""
        with self._ready:
            while index >= len(self._announced) and not self._closed:
                self._ready.wait()
            return self._announced[index] if index < len(self._announced) else None

    def _read(self, offset: int, size: int, buffer: bytearray, update: Callable[[memoryview], None], what: str) -> None:
        view = memoryview(buffer)
        while size:
            got = os.preadv(self._fd, [view[: min(len(view), size)]], offset)
            if not got:
                raise NetbuildError(f"{what}: the file ends {size} bytes early")
            update(view[:got])
            offset += got
            size -= got

    def _hash_members(self) -> None:
        buffer = bytearray(CHUNK)
        index = 0
        while (member := self._next(index)) is not None:
            digest = hashlib.sha256()
            self._read(member.offset, member.size, buffer, digest.update, _where(self._path, index, member))
            if digest.hexdigest() != member.sha256:
                self._damaged.append(index)
            index += 1

    def _hash_file(self) -> None:
        buffer = bytearray(CHUNK)
        index = 0
        while (member := self._next(index)) is not None:
            end = member.offset + member.size
            if end > self._hashed_to:
                self._read(self._hashed_to, end - self._hashed_to, buffer, self._whole.update,
                           _where(self._path, index, member))
                self._hashed_to = end
            index += 1
