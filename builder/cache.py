"""A content-addressed cache of initrd segments (compressed cpio members of groups of store paths).

Store paths are immutable, so the compressed bytes of a group of them depend only on their NAR
hashes and the writer's settings: the key. A rebuild after one store path changed reuses every
other group's bytes and recompresses only the changed ones.

One file per entry, `segments/<k[:2]>/<key>.seg`:

    blob (the members, back to back) | meta (JSON) | u64 meta length | sha256(meta) | MAGIC

The meta records each member's description — its sha256 among them — and the NAR hash and size of
every store path in the group, so a hit needs no access to the store at all. The meta is checked
against its digest when the entry is opened. The blob is copied into the initrd inside the kernel
(copy_file_range) and checked where it lands: the initrd's self-check hashes every member it holds
against the sha256 recorded here, which reads those bytes once instead of twice. A damaged entry is
dropped, never shipped: one whose meta does not check out by lookup() here (a miss); one whose blob
is shorter than its meta says by the initrd writer, which packs that group afresh in its place
(builder/writers/initrd.py); one whose bytes differ where they landed by the whole-store layout,
which writes the initrd once more (builder/layouts/initramfs.py, with checks/written.py).

Concurrency: entries are written to a private temporary file and renamed into place, so readers
see a whole entry or none, and two builds writing the same key write the same bytes. Pruning may
delete an entry another build is about to open: that build sees a miss and rebuilds the group.
Least-recently-used pruning keeps the total under a bound: a hit refreshes the entry's mtime.

Faults: the cache only saves time, so it never fails a build that can succeed without it. A cache
directory that cannot be made, written (read-only, full, over quota) or pruned is warned about
once, naming the directory and the error, and the build goes on uncached from there (hits already
found still serve: reading may work where writing does not). An entry being made when its write
fails is removed at once. Each build's temporary files are in a directory it owns (builder/owned.py),
so those of a killed build are removed by the next one, not left for STALE_TEMP_S.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from builder.owned import OwnedDir, remove_abandoned
from builder.tempblob import TempBlob

MAGIC = b"NBSEG-1\n"
_FOOTER = struct.Struct("<Q32s8s")  # meta length, sha256 of meta, MAGIC
FORMAT = 2  # 2: the blob is checked through its members' sha256 (no blob_sha256)
DEFAULT_MAX_BYTES = 10 << 30
STALE_TEMP_S = 24 * 3600  # a loose temporary file this old (an older netbuild's) belongs to a build that died
_BUILD_PREFIX = "build-"  # tmp/build-*: one directory per live build (owned.OwnedDir)


def _ignore(message: str) -> None:
    pass


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netbuild"


def cache_key(material: Any) -> str:
    """sha256 of the canonical JSON of everything that determines an entry's bytes."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class CacheEntry:
    """An entry whose meta was checked when it was looked up. Its file is opened again only to copy
    the blob (a build looks up thousands of entries before it copies the first)."""

    def __init__(self, key: str, path: Path, meta: dict[str, Any]) -> None:
        self.key = key
        self.path = path
        self.meta = meta

    @property
    def blob_size(self) -> int:
        return int(self.meta["blob_size"])

    def open_blob(self) -> BinaryIO:
        """The entry's file (the blob is its first blob_size bytes); FileNotFoundError if another
        build pruned it meanwhile."""
        return open(self.path, "rb")


class EntryWriter(TempBlob):
    """One entry being made (see TempBlob); appended(meta) publishes it under its key."""

    def __init__(self, cache: SegmentCache, key: str) -> None:
        super().__init__(cache.build_dir, f"{key[:16]}.")
        self._cache = cache
        self._key = key

    def appended(self, meta: dict[str, Any]) -> None:
        """Publish the entry; a failure to is a cache fault (the bytes are in the initrd already)."""
        try:
            self._publish(meta)
        except OSError as e:
            self.abort()
            self._cache.fault(e)

    def _publish(self, meta: dict[str, Any]) -> None:
        self.seal()
        with open(self.temp, "ab") as f:
            meta = {**meta, "format": FORMAT, "key": self._key, "blob_size": f.tell()}
            meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
            f.write(meta_bytes)
            f.write(_FOOTER.pack(len(meta_bytes), hashlib.sha256(meta_bytes).digest(), MAGIC))
        final = self._cache.entry_path(self._key)
        final.parent.mkdir(exist_ok=True)
        os.replace(self.temp, final)


def open_cache(root: Path, max_bytes: int = DEFAULT_MAX_BYTES,
               warn: Callable[[str], None] = _ignore) -> SegmentCache | None:
    """The cache at root, or None (after one warning) when it cannot be used at all."""
    try:
        return SegmentCache(root, max_bytes, warn)
    except OSError as e:
        warn(_fault_message(root, e))
        return None


def _fault_message(root: Path, e: OSError) -> str:
    where = f" ({os.fsdecode(e.filename)})" if e.filename is not None and Path(os.fsdecode(e.filename)) != root else ""
    return (f"cache directory {root}: {e.strerror or e}{where}; building without the cache "
            "(the output is the same, only slower; --cache-dir DIR or --no-cache to choose)")


class SegmentCache:
    """Raises OSError when root cannot be made into a cache (open_cache turns that into a warning)."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, warn: Callable[[str], None] = _ignore) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.segments = root / "segments"
        self.temp_dir = root / "tmp"
        self._warn = warn
        self._lock = threading.Lock()
        self.writable = True  # False after the first fault: nothing more is written
        for directory in (root, self.segments, self.temp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.temp_dir, _BUILD_PREFIX)  # killed builds' temporary files
        self._owned = OwnedDir(self.temp_dir, _BUILD_PREFIX)
        self.build_dir = self._owned.path

    def fault(self, e: OSError) -> None:
        """Writing failed: warn once, write nothing more (thread-safe)."""
        with self._lock:
            first, self.writable = self.writable, False
        if first:
            self._warn(_fault_message(self.root, e))

    def close(self) -> None:
        """Remove this build's temporary directory (what is left in it was never published)."""
        shutil.rmtree(self.build_dir, ignore_errors=True)
        self._owned.release()

    def entry_path(self, key: str) -> Path:
        return self.segments / key[:2] / f"{key}.seg"

    def lookup(self, key: str) -> CacheEntry | None:
        path = self.entry_path(key)
        try:
            with open(path, "rb") as file:
                meta = _read_meta(file, key)
        except OSError:  # absent, or unreadable: a miss either way
            return None
        if meta is None:
            self.drop(key)
            return None
        with contextlib.suppress(OSError):  # pruned meanwhile: the caller finds out when it copies
            os.utime(path)  # least recently used = oldest mtime
        return CacheEntry(key, path, meta)

    def writer(self, key: str) -> EntryWriter | None:
        """A writer for a new entry, or None once the cache cannot be written."""
        if not self.writable:
            return None
        try:
            return EntryWriter(self, key)
        except OSError as e:
            self.fault(e)
            return None

    def drop(self, key: str) -> None:
        try:
            self.entry_path(key).unlink(missing_ok=True)
        except OSError as e:
            self.fault(e)

    def prune(self) -> int:
        """Delete least recently used entries until the cache fits max_bytes; returns bytes freed."""
        try:
            return self._prune()
        except OSError as e:
            self.fault(e)
            return 0

    def _prune(self) -> int:
        now = time.time()
        for temp in self.temp_dir.iterdir():
            if temp.name.startswith(_BUILD_PREFIX):
                continue  # a build's own directory: removed by remove_abandoned once its build is gone
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
        return cast(dict[str, Any], meta)  # json.loads is untyped; the checks above make it this
    except (OSError, ValueError, struct.error):
        return None


def memoized(root: Path | None, namespace: str, material: Any, compute: Callable[[], Any]) -> Any:
    """compute(), remembered under root/memo/namespace by a key of material: for results that are
    slow to find and depend only on immutable input (is there a config inside this kernel image?).
    The value must be JSON; without a root (--no-cache) it is computed every time. An unreadable
    memo is computed again and rewritten."""
    if root is None:
        return compute()
    path = root / "memo" / namespace / f"{cache_key(material)}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_bytes())["value"]
    value = compute()
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps({"value": value}).encode())
            os.replace(temp, path)
        except OSError:
            os.unlink(temp)  # full or failing: leave nothing behind
            raise
    return value
