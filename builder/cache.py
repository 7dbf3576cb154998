"""A content-addressed cache of initrd segments (compressed cpio members of groups of store paths).

Store paths are immutable, so the compressed bytes of a group of them depend only on their NAR
hashes and the writer's settings: the key. A rebuild after one store path changed reuses every
other group's bytes and recompresses only the changed ones.

One file per entry, `segments/<k[:2]>/<key>.seg`:

    blob (the members, back to back) | meta (JSON) | u64 meta length | sha256(meta) | MAGIC

The meta records the blob's sha256, each member's description and the NAR hash and size of every
store path in the group, so a hit needs no access to the store at all. Every entry is checked on
use — the meta against its digest on open, the blob while it is copied — and a damaged entry is
dropped and rebuilt by the caller, never shipped.

Concurrency: entries are written to a private temporary file and renamed into place, so readers
see a whole entry or none, and two builds writing the same key write the same bytes. Pruning may
delete an entry another build is about to open: that build sees a miss and rebuilds the group.
Least-recently-used pruning keeps the total under a bound: a hit refreshes the entry's mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from builder.errors import NetbuildError

MAGIC = b"NBSEG-1\n"
_FOOTER = struct.Struct("<Q32s8s")  # meta length, sha256 of meta, MAGIC
FORMAT = 1
DEFAULT_MAX_BYTES = 10 << 30
STALE_TEMP_S = 24 * 3600  # a temporary file this old belongs to a build that died
_COPY_CHUNK = 4 << 20


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netbuild"


def cache_key(material: Any) -> str:
    """sha256 of the canonical JSON of everything that determines an entry's bytes."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class CacheEntry:
    """An open, meta-checked entry; its blob is checked as it is copied out."""

    def __init__(self, cache: SegmentCache, key: str, file: BinaryIO, meta: dict[str, Any]) -> None:
        self._cache = cache
        self.key = key
        self._file = file
        self.meta = meta

    def copy_blob(self, write: Callable[[memoryview], object]) -> bool:
        """Copy the blob to write(); False (and the entry dropped) if it is not what was stored."""
        digest = hashlib.sha256()
        remaining = int(self.meta["blob_size"])
        buffer = bytearray(_COPY_CHUNK)  # reused: no allocation (and page faults) per chunk
        view = memoryview(buffer)
        self._file.seek(0)
        while remaining:
            got = self._file.readinto(view[: min(_COPY_CHUNK, remaining)])  # type: ignore[attr-defined]
            if not got:
                break
            digest.update(view[:got])
            write(view[:got])
            remaining -= got
        self.close()
        if remaining or digest.hexdigest() != self.meta["blob_sha256"]:
            self._cache.drop(self.key)
            return False
        return True

    def close(self) -> None:
        self._file.close()


class EntryWriter:
    """Collects one entry's blob in a temporary file; commit() publishes it under its key."""

    def __init__(self, cache: SegmentCache, key: str) -> None:
        self._cache = cache
        self._key = key
        fd, name = tempfile.mkstemp(prefix=f"{key[:16]}.", suffix=".tmp", dir=cache.temp_dir)
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self._size += len(data)

    def commit(self, meta: dict[str, Any]) -> None:
        meta = {**meta, "format": FORMAT, "key": self._key, "blob_size": self._size,
                "blob_sha256": self._digest.hexdigest()}
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        self._file.write(meta_bytes)
        self._file.write(_FOOTER.pack(len(meta_bytes), hashlib.sha256(meta_bytes).digest(), MAGIC))
        self._file.close()
        final = self._cache.entry_path(self._key)
        final.parent.mkdir(exist_ok=True)
        os.replace(self._temp, final)

    def abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    damaged: int = 0


class SegmentCache:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.segments = root / "segments"
        self.temp_dir = root / "tmp"
        self.stats = CacheStats()
        try:
            for directory in (root, self.segments, self.temp_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NetbuildError(
                f"cache directory {root}: cannot create it: {e.strerror} (choose another with --cache-dir, "
                "or build with --no-cache)"
            ) from None

    def entry_path(self, key: str) -> Path:
        return self.segments / key[:2] / f"{key}.seg"

    def lookup(self, key: str) -> CacheEntry | None:
        path = self.entry_path(key)
        try:
            file = open(path, "rb")  # noqa: SIM115 — the entry owns it until copy_blob/close
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        meta = _read_meta(file, key)
        if meta is None:
            file.close()
            self.drop(key)
            return None
        with contextlib.suppress(OSError):  # pruned meanwhile: the open file still reads
            os.utime(path)  # least recently used = oldest mtime
        self.stats.hits += 1
        return CacheEntry(self, key, file, meta)

    def writer(self, key: str) -> EntryWriter:
        return EntryWriter(self, key)

    def drop(self, key: str) -> None:
        self.stats.damaged += 1
        self.entry_path(key).unlink(missing_ok=True)

    def prune(self) -> int:
        """Delete least recently used entries until the cache fits max_bytes; returns bytes freed."""
        now = time.time()
        for temp in self.temp_dir.iterdir():
            try:
                if now - temp.stat().st_mtime > STALE_TEMP_S:
                    temp.unlink()
            except FileNotFoundError:
                pass
        entries: list[tuple[float, int, Path]] = []
        for path in self.segments.glob("*/*.seg"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _mtime, size, path in sorted(entries):
            if total - freed <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            freed += size
        return freed


def _read_meta(file: BinaryIO, key: str) -> dict[str, Any] | None:
    """The entry's meta if its footer, digest, key and sizes are consistent; else None (damaged)."""
    try:
        end = file.seek(0, os.SEEK_END)
        if end < _FOOTER.size:
            return None
        file.seek(end - _FOOTER.size)
        length, digest, magic = _FOOTER.unpack(file.read(_FOOTER.size))
        if magic != MAGIC or length > end - _FOOTER.size:
            return None
        file.seek(end - _FOOTER.size - length)
        meta_bytes = file.read(length)
        if hashlib.sha256(meta_bytes).digest() != digest:
            return None
        meta = json.loads(meta_bytes)
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        if meta.get("blob_size") != end - _FOOTER.size - length:
            return None
        return meta  # type: ignore[no-any-return]
    except (OSError, ValueError, struct.error):
        return None
