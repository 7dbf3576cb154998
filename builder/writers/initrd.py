"""The whole-store initrd: the closure as newc archives in separately compressed, cached members.

Members, back to back (the kernel unpacks each in turn into the same root):
  1. the skeleton — dev/console, mount points, nix/store, an /init link;
  2. the store paths in path order, in groups (writers/grouping.py). A group is one or more
     members of at most FRAME_TARGET plain bytes; an entry never spans two members (the kernel
     requires whole records in each). A group's members are cached under a key made of its store
     paths' NAR hashes and the writer's settings, so a rebuild recompresses only changed groups;
  3. nix/store/nix-path-registration — last: it needs every path's NAR hash.
Every member is a whole newc archive with its own trailer, its inodes numbered from 1 (all entries
have nlink 1, so the kernel never compares inode numbers), so its bytes do not depend on its position.

Each store path is read exactly once: the same walk feeds the cpio writer and a NAR hasher, so the
narHash/narSize the closure claims are verified (or, when absent, computed) while packing.

Groups the cache lacks are packed on `jobs` threads (the codecs and hashes release the GIL), a
whole group per task, largest first, each into a segment file of its own; this thread appends the
segments to the initrd in path order (an in-kernel copy) as they are ready, cached ones included.
Each member is checked as soon as it is made — decompressed again and its records parsed — so the
build's self-check need only confirm the bytes on disk are the ones checked. Memory stays bounded
and flat in the closure's size: each thread holds one member of at most FRAME_TARGET plain bytes,
an entry too large for one member is compressed as it is read, and waiting segments are files.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from builder.cache import CacheEntry, SegmentCache
from builder.closure import REGISTRATION_PATH, Closure, StoreFS, StorePath, VerifiedPath, store_read_error
from builder.errors import NetbuildError, is_write_error
from builder.filecopy import copy_range
from builder.footprint import node_bytes
from builder.formats import CHUNK
from builder.formats.compress import Compression
from builder.formats.cpio import CpioError, CpioWriter
from builder.formats.initrd import Member
from builder.formats.nar import (
    DIR_MODE,
    EXEC_MODE,
    FILE_MODE,
    NarError,
    NarHasher,
    Node,
    NodeKind,
    nar_size,
    read_contents,
    walk,
)
from builder.preinit import preinit_program
from builder.progress import QUIET, Reporter
from builder.tempblob import TempBlob
from builder.writers.frames import Frame, FrameBuilder, entry_size, single_member
from builder.writers.groupcache import cached_paths, group_key, path_identity
from builder.writers.grouping import group_paths
from builder.writers.members import InitrdResult, Written
from builder.writers.registration import registration

GROUP_TARGET = 2 << 20  # plain bytes per cached group, on average


def _pack_node(cpio_for: Callable[[int], CpioWriter], node: Node, name: str, hasher: NarHasher,
               read_bytes: Callable[[int], None]) -> None:
    raw = os.fsencode(name)
    if node.kind is NodeKind.DIRECTORY:
        cpio_for(entry_size(raw, 0)).directory(name, DIR_MODE)
    elif node.kind is NodeKind.SYMLINK:
        cpio_for(entry_size(raw, len(node.target))).symlink(name, node.target)
    else:
        cpio = cpio_for(entry_size(raw, node.size))
        cpio.regular(name, EXEC_MODE if node.executable else FILE_MODE, node.size)
        for chunk in read_contents(node, CHUNK, _read_buffer()):
            cpio.data(chunk)
            hasher.data(chunk)
            read_bytes(len(chunk))


_local = threading.local()


def _read_buffer() -> bytearray:
    """This thread's buffer for file contents, reused (see formats/nar.read_contents)."""
    buffer = getattr(_local, "read_buffer", None)
    if buffer is None:
        buffer = _local.read_buffer = bytearray(CHUNK)
    return buffer


def pack_store_path(
    builder: FrameBuilder, sp: StorePath, store: StoreFS, read_bytes: Callable[[int], None]
) -> VerifiedPath:
    """Write one store path into the group's members and return its NAR hash and size as read."""
    root = store.disk_path(sp.path)
    arc_root = sp.path.lstrip("/")
    hasher = NarHasher()
    rootfs_bytes = 0  # counted here, on nodes read anyway: the boot memory follows it
    try:
        for node in walk(root):
            hasher.node(node)
            rootfs_bytes += node_bytes(node)
            name = f"{arc_root}/{node.relpath}" if node.relpath else arc_root
            _pack_node(builder.writer_for, node, name, hasher, read_bytes)
            builder.entry_done()
        digest, size = hasher.finish()
    except (NarError, CpioError, OSError) as e:
        if is_write_error(e):
            raise  # the initrd or a segment file, not the store: the caller reports it
        raise store_read_error(sp, e) from None
    return sp.verified(digest, size, rootfs_bytes)


def write_skeleton(cpio: CpioWriter, init: str, arch: str = "x86_64") -> None:
    """What a root filesystem needs before init runs: a console for its stdio, mount points, and
    /init, netbuild's preinit (builder/preinit): the kernel runs it, it gives `init=` (or, when a
    boot loader dropped the command line, `init`) a root where pivot_root works; /run is where it
    bind-mounts the initramfs. `arch`: the kernel's (builder/arch.py), which /init's machine code is for."""
    cpio.directory("dev", 0o755)
    cpio.device("dev/console", 0o600, "char", 5, 1)
    cpio.file("init", 0o555, preinit_program(init, arch))
    cpio.directory("nix", 0o755)
    cpio.directory("nix/store", 0o755)
    for mount_point in ("proc", "run", "sys"):
        cpio.directory(mount_point, 0o755)
    cpio.directory("tmp", 0o1777)


# --- assembling the initrd -----------------------------------------------------------------


@dataclass
class _Group:
    index: int
    paths: list[StorePath]
    key: str | None
    plain_bytes: int  # the paths' NAR size: how long packing it takes, roughly
    entry: CacheEntry | None = None  # a hit
    segment: TempBlob | None = None  # a miss: where its members are packed (a cache entry being made)
    frames: list[Frame] = field(default_factory=list)
    verified: list[VerifiedPath] = field(default_factory=list)
    from_cache: bool = False


class _Output:
    """The initrd file, members appended in order; the members' descriptions follow the bytes."""

    def __init__(self, dest: BinaryIO, comp: Compression, written: Written | None) -> None:
        self.dest = dest
        self.comp = comp
        self.start = dest.tell()
        self.members: list[Member] = []
        self._written = written

    def _announce(self, count: int) -> None:
        """Tell the self-check these last members are on disk: it reads them while we go on."""
        if self._written is not None:
            self.dest.flush()
            self._written(self.members[-count:])

    @property
    def offset(self) -> int:
        return self.dest.tell() - self.start

    def single(self, role: str, fill: Callable[[CpioWriter], None]) -> None:
        offset = self.offset
        frame = single_member(self.comp, self.dest, fill)
        self.members.append(self._member(role, offset, frame.describe(), None))
        self._announce(1)

    def segment(self, source: BinaryIO, described: list[dict[str, Any]], cache_key: str | None) -> bool:
        """Append a group's members, copied from source (a cache entry or a packed segment)."""
        offset = self.offset
        size = sum(d["size"] for d in described)
        if copy_range(source, 0, size, self.dest) != size:
            self.dest.seek(self.start + offset)
            self.dest.truncate()
            return False
        for d in described:
            self.members.append(self._member("store", offset, d, cache_key))
            offset += d["size"]
        self._announce(len(described))
        return True

    def _member(self, role: str, offset: int, d: dict[str, Any], cache_key: str | None) -> Member:
        return Member(role=role, offset=offset, size=d["size"], compression=self.comp.name,
                      plain_size=d["plain_size"], plain_sha256=d["plain_sha256"], entries=d["entries"],
                      sha256=d["sha256"], cache_key=cache_key)


class _Assembler:
    """Packs the groups the cache lacks on `jobs` threads, largest first, each into a segment file
    of its own; appends every group's members to the output in path order as they become ready.

    A thread packs a whole group — reads its paths, cuts, compresses and checks its members —
    so the only order to keep is the output's, and that costs one in-kernel copy per segment.
    Largest first keeps both threads busy to the end: a 70 MB file, compressed as one member on
    one thread, starts early instead of finishing alone.
    """

    def __init__(self, out: _Output, store: StoreFS, jobs: int, cache: SegmentCache | None,
                 done: Callable[[int, int], None]) -> None:
        self.out = out
        self.store = store
        self.cache = cache
        self.done = done  # (paths, bytes) finished; called from any thread
        self.jobs = jobs
        self.spool_dir = _spool_dir(out.dest)

    def run(self, groups: list[_Group]) -> None:
        misses = sorted((g for g in groups if g.entry is None), key=lambda g: (-g.plain_bytes, g.index))
        failed_at = [len(groups)]  # the first group in path order known to have failed
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="netbuild-pack") as pool:
            futures: dict[int, Future[None]] = {}

            def pack(group: _Group) -> None:
                if group.index > failed_at[0]:
                    return  # an earlier group failed: its error is the one reported
                try:
                    self._pack(group)
                except BaseException:
                    failed_at[0] = min(failed_at[0], group.index)
                    raise

            try:
                for group in misses:
                    futures[group.index] = pool.submit(pack, group)
                for group in groups:
                    future = futures.get(group.index)
                    if future is not None:
                        future.result()
                        self._append_packed(group)
                    else:
                        self._append_cached(group)
            except BaseException:
                failed_at[0] = -1  # stop the rest
                pool.shutdown(wait=True, cancel_futures=True)
                for group in groups:
                    self._discard(group)
                raise

    def _pack(self, group: _Group) -> None:
        entry = self.cache.writer(group.key) if self.cache is not None and group.key is not None else None
        if entry is not None:
            try:
                self._pack_into(group, entry)
                return
            except OSError as e:  # writing the cache entry failed (reading the store raises NetbuildError)
                entry.abort()
                group.segment = None
                assert self.cache is not None
                self.cache.fault(e)  # warned once; this group and the rest go uncached
        self._pack_into(group, TempBlob(self.spool_dir, ".segment-"))  # no cache: gone once appended

    def _pack_into(self, group: _Group, segment: TempBlob) -> None:
        group.segment = segment
        assert segment.file is not None
        builder = FrameBuilder(self.out.comp, segment.file)

        def read(n: int) -> None:
            self.done(0, n)

        group.verified = [pack_store_path(builder, sp, self.store, read) for sp in group.paths]
        builder.finish()
        group.frames = builder.frames
        segment.seal()  # closed until its turn: thousands of groups may be packed ahead

    def _append_packed(self, group: _Group) -> None:
        segment = group.segment
        assert segment is not None
        described = [f.describe() for f in group.frames]
        with segment.open_blob() as blob:
            if not self.out.segment(blob, described, None):
                raise NetbuildError("assembling the initrd: a packed segment was shorter than written")
        segment.appended({
            "frames": described,
            "paths": [{"path": v.path, "narHash": v.nar_hash.hex(), "narSize": v.nar_size} for v in group.verified],
        })
        group.segment = None
        self.done(len(group.paths), 0)

    def _append_cached(self, group: _Group) -> None:
        entry = group.entry
        assert entry is not None
        group.entry = None
        verified = cached_paths(entry, group.paths)
        whole = sum(d["size"] for d in entry.meta["frames"]) == entry.blob_size
        if verified is not None and whole:
            try:
                with entry.open_blob() as blob:
                    copied = self.out.segment(blob, entry.meta["frames"], entry.key)
            except FileNotFoundError:
                copied = False  # pruned by another build since it was looked up: pack it again
            else:
                if not copied:
                    assert self.cache is not None
                    self.cache.drop(entry.key)  # shorter than its meta says
            if copied:
                group.verified = verified
                group.from_cache = True
                self.done(len(group.paths), sum(v.nar_size for v in verified))
                return
        # Damaged, inconsistent or gone: pack it again here, in order, before anything after it.
        self._pack(group)
        self._append_packed(group)

    def _discard(self, group: _Group) -> None:
        if group.segment is not None:
            group.segment.abort()
            group.segment = None
        group.entry = None


def _spool_dir(dest: BinaryIO) -> str | None:
    """Packed segments wait beside the output (same filesystem: the copy can share extents)."""
    name = getattr(dest, "name", None)
    return os.path.dirname(os.path.abspath(name)) if isinstance(name, str) else None


def write_initrd(
    dest: BinaryIO,
    *,
    closure: Closure,
    store: StoreFS,
    init: str,
    compression: Compression,
    jobs: int,
    report: Reporter = QUIET,
    cache: SegmentCache | None = None,
    written: Written | None = None,
    arch: str = "x86_64",
) -> InitrdResult:
    """Write the initrd to dest, its /init for `arch` (builder/arch.py's name). `written`, if given,
    is told each batch of members as soon as their bytes are in dest (flushed), in order, so that
    the self-check can read along."""
    paths = list(closure)
    sized: list[tuple[str, int]] = []
    for sp in paths:
        try:
            size = sp.nar_size if sp.nar_size is not None else nar_size(store.disk_path(sp.path))
        except (NarError, OSError) as e:
            raise store_read_error(sp, e) from None
        sized.append((sp.path, size))

    out = _Output(dest, compression, written)
    out.single("skeleton", lambda cpio: write_skeleton(cpio, init, arch))
    done_paths = done_bytes = 0
    lock = threading.Lock()

    def done(n_paths: int, n_bytes: int) -> None:
        nonlocal done_paths, done_bytes
        with lock:
            done_paths += n_paths
            done_bytes += n_bytes
            report.progress(done_paths, done_bytes)

    groups: list[_Group] = []
    for indexes in group_paths(sized, GROUP_TARGET):
        members = [paths[i] for i in indexes]
        key = group_key(compression, [path_identity(sp, store) for sp in members]) if cache else None
        entry = cache.lookup(key) if cache is not None and key is not None else None
        groups.append(_Group(len(groups), members, key, sum(sized[i][1] for i in indexes), entry))
    _Assembler(out, store, max(1, jobs), cache, done).run(groups)

    verified = [v for group in groups for v in group.verified]
    reg = registration(verified)
    out.single("registration", lambda cpio: cpio.file(REGISTRATION_PATH.lstrip("/"), FILE_MODE, reg))
    reused = None
    if cache is not None:
        cache.prune()
        reused = (sum(1 for g in groups if g.from_cache), len(groups))
    return InitrdResult(verified=verified, members=out.members, registration=reg, reused=reused)
