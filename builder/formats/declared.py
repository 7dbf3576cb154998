"""A regular file's contents that an archive's header has already declared the size of (cpio's
c_filesize, a NAR's contents length): the writers take them in chunks after the header, and each
must refuse a chunk beyond that size, refuse a new entry before it is complete, and pad when it is.
One counter, used by the cpio and NAR writers alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Entry = TypeVar("Entry")


@dataclass
class DeclaredContents(Generic[Entry]):
    """The entry being filled (None: no file is open) and how many of its declared bytes are to come.
    too_many makes the format's own error for bytes beyond the size (or with no file open: None)."""

    too_many: Callable[[Entry | None], Exception]
    entry: Entry | None = field(default=None, init=False)
    size: int = field(default=0, init=False)
    remaining: int = field(default=0, init=False)

    def open(self, entry: Entry, size: int) -> None:
        self.entry, self.size, self.remaining = entry, size, size

    def take(self, length: int) -> Entry | None:
        """Counts `length` more bytes of contents. Returns the entry when they complete it (and closes
        it), None when more are to come. Raises too_many's error when no file is open or they are too many."""
        entry = self.entry
        if entry is None or length > self.remaining:
            raise self.too_many(entry)
        self.remaining -= length
        if self.remaining:
            return None
        self.entry = None
        return entry
