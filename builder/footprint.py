"""What store paths occupy once unpacked into the initial root file system (a tmpfs): each regular
file rounded up to whole pages, long symlink targets a page each, directories nothing.

This is what the whole-store layout's boot memory follows (builder/run/memory.py). The initrd
writer counts it as it packs a store path (node_bytes, on the nodes it reads anyway), so a cold
build walks no file twice; a store path never changes, so the figure is remembered in the cache
directory under its NAR hash, and a rebuild that copies a path's members from the cache looks at
none of its files. Only a path neither packed nor remembered (--no-cache) is walked here.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path

from builder.cache import memoized
from builder.closure import StoreFS, VerifiedPath
from builder.formats.nar import Node, NodeKind, walk
from builder.run.memory import PAGE, pages

# tmpfs keeps a symlink target shorter than this inside the inode (SHORT_SYMLINK_LEN in mm/shmem.c).
_INLINE_SYMLINK = 128
_MEMO = "rootfs-bytes-1"


def node_bytes(node: Node) -> int:
    """One entry's pages: a file's data, or a symlink's target when it is too long to be inline."""
    if node.kind is NodeKind.REGULAR:
        return pages(node.size)
    if node.kind is NodeKind.SYMLINK and len(node.target) >= _INLINE_SYMLINK:
        return PAGE
    return 0


def _walk(root: Path) -> int:
    return sum(node_bytes(node) for node in walk(root))


def store_rootfs_bytes(store: StoreFS, paths: Iterable[VerifiedPath], cache_dir: Path | None) -> int:
    """The tmpfs bytes of these store paths: as the writer counted them, else remembered by NAR
    hash, else walked (and remembered)."""
    total = 0
    for sp in paths:
        counted = sp.rootfs_bytes
        compute = (lambda counted=counted: counted) if counted is not None else partial(_walk, store.disk_path(sp.path))
        total += int(memoized(cache_dir, _MEMO, [sp.path, sp.nar_hash_nix32], compute))
    return total
