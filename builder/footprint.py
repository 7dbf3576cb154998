"""What store paths occupy once unpacked into the initial root file system (a tmpfs): each regular
file rounded up to whole pages, long symlink targets a page each, directories nothing.

This is what the whole-store layout's boot memory follows (builder/run/memory.py). A store path
never changes, so its figure is remembered in the cache directory under its NAR hash: a rebuild
looks at no file of an unchanged path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from builder.cache import memoized
from builder.closure import StoreFS, VerifiedPath
from builder.run.memory import PAGE, pages

# tmpfs keeps a symlink target shorter than this inside the inode (SHORT_SYMLINK_LEN in mm/shmem.c).
_INLINE_SYMLINK = 128
_MEMO = "rootfs-bytes-1"


def tmpfs_bytes(mode: int, size: int) -> int:
    """One entry's pages: a file's data, or a symlink's target when it is too long to be inline."""
    if stat.S_ISREG(mode):
        return pages(size)
    if stat.S_ISLNK(mode) and size >= _INLINE_SYMLINK:
        return PAGE
    return 0


def _walk(root: Path) -> int:
    info = os.lstat(root)
    total = tmpfs_bytes(info.st_mode, info.st_size)
    if stat.S_ISDIR(info.st_mode):
        with os.scandir(root) as entries:
            for entry in entries:
                total += _walk(Path(entry.path))
    return total


def store_rootfs_bytes(store: StoreFS, paths: Iterable[VerifiedPath], cache_dir: Path | None) -> int:
    """The tmpfs bytes of these store paths, each walked once and then remembered by its NAR hash."""
    total = 0
    for sp in paths:
        disk = store.disk_path(sp.path)
        total += int(memoized(cache_dir, _MEMO, [sp.path, sp.nar_hash_nix32], partial(_walk, disk)))
    return total
