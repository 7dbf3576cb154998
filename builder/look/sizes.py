"""Which store paths an initrd (or an OUT directory) holds, and how many bytes each takes unpacked."""

from __future__ import annotations

import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from builder.closure import REGISTRATION_PATH, owner
from builder.errors import NetbuildError
from builder.look.inspect import Listing, inspect_initrd
from builder.outcontract import INITRD, MANIFEST, ManifestError, read_manifest

OTHER = "(outside the store)"  # the skeleton, a stage 1, the registration: everything not in a store path


@dataclass(frozen=True)
class StorePathSize:
    path: str  # /nix/store/…, or OTHER
    size: int  # bytes of file data and symlink targets
    files: int  # entries

    @property
    def name(self) -> str:
        """The part after the hash ("busybox"), what a person recognises."""
        base = self.path.rsplit("/", 1)[-1]
        return base.split("-", 1)[1] if "-" in base and self.path != OTHER else base


@dataclass(frozen=True)
class Sizes:
    source: str  # what was read, for the report
    initrd_bytes: int  # the initrd file as shipped (compressed)
    paths: list[StorePathSize]  # largest first, then by path

    @property
    def total(self) -> int:
        return sum(p.size for p in self.paths)


def initrd_of(target: Path) -> Path:
    """An initrd file, or the initrd of an OUT directory."""
    if target.is_dir():
        initrd = target / INITRD
        if not initrd.is_file():
            raise NetbuildError(f"{target}: a directory without an initrd (expected a netbuild OUT directory)")
        return initrd
    if not target.exists():
        raise NetbuildError(f"{target}: no such file or directory")
    return target


def sizes_of_listing(listing: Listing) -> list[StorePathSize]:
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for entry in listing.entries:
        top = owner("/" + entry.name)  # an archive's names have no leading '/'
        holder = top if top is not None and top != REGISTRATION_PATH else OTHER
        data = entry.size if stat.S_ISREG(entry.mode) or stat.S_ISLNK(entry.mode) else 0
        sizes[holder] += data
        counts[holder] += 1
    return sorted((StorePathSize(p, sizes[p], counts[p]) for p in sizes), key=lambda s: (-s.size, s.path))


def sizes_of(target: Path) -> Sizes:
    """Per store path, from the initrd's own entries; for an OUT whose initrd does not hold the store
    as files (a squashfs layout), from the NAR sizes manifest.json records."""
    initrd = initrd_of(target)
    listing = inspect_initrd(initrd)
    paths = sizes_of_listing(listing)
    if target.is_dir() and all(p.path == OTHER for p in paths):
        paths = sorted(_from_manifest(target) + paths, key=lambda s: (-s.size, s.path))
        return Sizes(f"{target}/{MANIFEST} (NAR sizes)", listing.size, paths)
    return Sizes(str(initrd), listing.size, paths)


def _from_manifest(out: Path) -> list[StorePathSize]:
    try:
        return [StorePathSize(path, nar_size, 0) for path, nar_size in read_manifest(out).store_paths]
    except ManifestError as e:
        raise NetbuildError(f"{out}/{MANIFEST}: cannot read the closure's sizes ({e.reason})") from None
