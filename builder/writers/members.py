"""What an initrd writer reports: the members it wrote back to back (each a Member, which
builder/formats/initrd.py defines: readers need it too), and the closure it verified.

Every layout describes its initrd the same way, so the self-check, `netbuild check` and the manifest
need not know how it was made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from builder.closure import VerifiedPath
from builder.formats.initrd import Member

# Told each batch of members as soon as their bytes are in the initrd file, in order.
Written = Callable[[Sequence[Member]], None]


@dataclass(frozen=True)
class InitrdResult:
    verified: list[VerifiedPath]  # every store path with the NAR hash and size read from disk
    members: list[Member]  # in file order from offset 0; only NUL padding may lie between two members
    registration: bytes  # the nix-path-registration shipped in the initrd
    reused: tuple[int, int] | None = None  # (groups taken from the cache, groups), when a cache was used
    # Files the layout wrote beside the initrd in OUT (vm-disk's store.img): name → (size, sha256).
    companions: tuple[tuple[str, tuple[int, str]], ...] = ()

    @property
    def plain_size(self) -> int:
        return sum(m.plain_size for m in self.members)

    @property
    def entries(self) -> int:
        return sum(m.entries for m in self.members)
