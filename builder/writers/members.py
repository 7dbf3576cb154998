"""What an initrd writer reports: the archives (members) it wrote back to back, and the closure it verified.

Every layout describes its initrd the same way, so the self-check, `netbuild check` and the manifest
need not know how it was made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from builder.closure import VerifiedPath


@dataclass(frozen=True)
class Member:
    """One archive of the initrd: a cpio stream, plain or compressed as one frame/stream/member."""

    role: str  # what it holds, for people reading the manifest: "store", "stage1", "squashfs", …
    offset: int  # where it starts in the initrd file
    size: int  # bytes it occupies in the file
    compression: str  # "zstd", "gzip", "xz" or "none"
    plain_size: int  # bytes of cpio once decompressed
    plain_sha256: str  # of those bytes
    entries: int  # cpio records before the trailer
    sha256: str | None = None  # of the member's bytes as written, when the writer recorded it
    # The cache entry the bytes were copied from, if any: the self-check drops it when they differ.
    cache_key: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "role": self.role,
            "offset": self.offset,
            "size": self.size,
            "compression": self.compression,
            "entries": self.entries,
            "uncompressedSize": self.plain_size,
            "uncompressedSha256": self.plain_sha256,
        }
        if self.sha256 is not None:
            doc["sha256"] = self.sha256
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Member:
        return cls(
            role=str(doc["role"]),
            offset=int(doc["offset"]),  # type: ignore[call-overload]
            size=int(doc["size"]),  # type: ignore[call-overload]
            compression=str(doc["compression"]),
            plain_size=int(doc["uncompressedSize"]),  # type: ignore[call-overload]
            plain_sha256=str(doc["uncompressedSha256"]),
            entries=int(doc["entries"]),  # type: ignore[call-overload]
            sha256=str(doc["sha256"]) if "sha256" in doc else None,
        )


# Told each batch of members as soon as their bytes are in the initrd file, in order.
Written = Callable[[Sequence[Member]], None]


@dataclass(frozen=True)
class InitrdResult:
    verified: list[VerifiedPath]  # every store path with the NAR hash and size read from disk
    members: list[Member]  # in file order from offset 0; only NUL padding may lie between two members
    registration: bytes  # the nix-path-registration shipped in the initrd
    # True when the writer decompressed and parsed every member as it made it and recorded each
    # member's sha256: the self-check then need only confirm the file holds those bytes.
    checked: bool = False
    reused: tuple[int, int] | None = None  # (groups taken from the cache, groups), when a cache was used

    @property
    def plain_size(self) -> int:
        return sum(m.plain_size for m in self.members)

    @property
    def entries(self) -> int:
        return sum(m.entries for m in self.members)
