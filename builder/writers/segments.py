"""A group's segment: where its packed members wait for their turn in the initrd, and what the
cache knows of it (its key, and the NAR hashes it was packed from).

Only paths are kept between packing a group and appending it, never open files: a large closure
has thousands of groups, and packing runs ahead of appending (largest first), so open files
would run into the descriptor limit (1024 by default).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from typing import Any, BinaryIO

from builder.cache import CacheEntry, cache_key
from builder.closure import StoreFS, StorePath, VerifiedPath
from builder.errors import NetbuildError
from builder.formats.compress import Compression
from builder.formats.members import codec_version
from builder.formats.nar import NarError, walk
from builder.writers import frames
from builder.writers.frames import CHUNK

WRITER_FORMAT = 1  # bump when the bytes written for the same input change


def store_error(sp: StorePath, e: Exception) -> NetbuildError:
    """A failure reading sp from the store, as the one-line error naming it."""
    if isinstance(e, OSError):
        if e.filename is None:
            raise e  # writing failed, not reading the store: the caller reports it
        return NetbuildError(f"{sp.path}: cannot read {os.fsdecode(e.filename)}: {e.strerror}")
    return NetbuildError(f"{sp.path}: {e}")


class Spool:
    """A packed group's segment when there is no cache: a file beside the output, removed once
    appended. The same four steps as a cache entry being written (cache.EntryWriter)."""

    def __init__(self, directory: str | None) -> None:
        fd, self._path = tempfile.mkstemp(prefix=".segment-", dir=directory)
        self.file: BinaryIO | None = os.fdopen(fd, "w+b")

    def seal(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def open_blob(self) -> BinaryIO:
        return open(self._path, "rb")

    def keep(self, meta: dict[str, Any]) -> None:
        os.unlink(self._path)

    def abort(self) -> None:
        self.seal()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


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
        raise store_error(sp, e) from None
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


