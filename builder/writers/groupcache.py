"""A group's entry in the segment cache, as the whole-store writer makes and reads it: its key
(the store paths' identities and the writer's settings) and the NAR hashes and sizes of the paths
it was packed from. Where a packed group waits for its turn in the initrd is a TempBlob
(builder/tempblob.py); the entry's bytes are its segment (builder/cache.py keeps them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from builder.cache import CacheEntry, cache_key
from builder.closure import StoreFS, StorePath, VerifiedPath, store_read_error
from builder.formats import CHUNK
from builder.formats.compress import Compression, codec_version
from builder.formats.nar import NarError, walk
from builder.writers import frames

WRITER_FORMAT = 1  # bump when the bytes written for the same input change


def path_identity(sp: StorePath, store: StoreFS) -> list[Any]:
    """What a cached group may be reused for: the NAR hash when the closure gives one (store paths
    are immutable), otherwise the metadata of every file (a change of content changes mtime/size)."""
    if sp.nar_hash is not None:
        return [sp.path, sp.nar_hash.hex(), sp.nar_size]
    digest = hashlib.sha256()
    try:
        for node in walk(store.disk_path(sp.path)):
            st = os.lstat(node.path)
            digest.update(repr((node.relpath, node.kind.value, node.executable, node.size, node.target,
                                st.st_mtime_ns, st.st_ctime_ns, st.st_ino)).encode())
    except (NarError, OSError) as e:
        raise store_read_error(sp, e) from None
    return [sp.path, None, digest.hexdigest()]


def group_key(comp: Compression, identities: list[list[Any]]) -> str:
    return cache_key({
        "writer": WRITER_FORMAT,
        "codec": str(comp),
        "codec_version": codec_version(comp.name),
        "frame_target": frames.FRAME_TARGET,
        "chunk": CHUNK,
        "paths": identities,
    })


def cached_paths(entry: CacheEntry, paths: Sequence[StorePath]) -> list[VerifiedPath] | None:
    recorded = entry.meta.get("paths", [])
    if [r["path"] for r in recorded] != [sp.path for sp in paths]:
        return None
    verified = []
    for sp, r in zip(paths, recorded, strict=True):
        digest = bytes.fromhex(r["narHash"])
        size = int(r["narSize"])
        if (sp.nar_hash not in (None, digest)) or (sp.nar_size not in (None, size)):
            return None  # the closure disagrees with what was packed: pack again and say why
        verified.append(VerifiedPath(sp.path, digest, size, sp.references))
    return verified


