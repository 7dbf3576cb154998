"""The whole-store initrd: one newc archive of the closure, compressed as one member.

Each store path is read exactly once: the same walk feeds the cpio writer and a NAR hasher, so
the narHash/narSize the closure claims are verified (or, when absent, computed) while packing,
without a second pass over the store.

Archive order: a small skeleton (dev/console, mount points, nix/store, an /init link), then the
store paths in path order, each in NAR order (parents before children), then
nix/store/nix-path-registration last — it can only be written once every path has been hashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import BinaryIO

from builder.closure import Closure, StoreFS, StorePath, VerifiedPath
from builder.errors import NetbuildError
from builder.formats.compress import Compression, open_compressor
from builder.formats.cpio import CpioError, CpioWriter
from builder.formats.nar import NarError, NarHasher, NodeKind, read_contents, walk
from builder.formats.nixhash import format_nix32
from builder.writers.members import InitrdResult, Member
from builder.writers.registration import registration

CHUNK = 1 << 20
REGISTRATION_NAME = "nix/store/nix-path-registration"
# Modes are the store's canonical ones: a NAR records only "executable or not", so anything else a
# copy of the store happens to carry (umask, a cp without -p) is not part of the path's identity.
DIR_MODE, FILE_MODE, EXEC_MODE = 0o555, 0o444, 0o555

Progress = Callable[[int, int], None]  # (store paths done, bytes read)


class _Sink:
    """Batches the many small cpio writes and hashes the plain stream on its way to the compressor."""

    def __init__(self, forward: Callable[[bytes], None]) -> None:
        self._forward = forward
        self._buffer = bytearray()
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if len(data) >= CHUNK:
            # File contents arrive in whole chunks: pass them on as they are rather than copying
            # every byte into and out of the buffer. Compressors' output does not depend on how
            # their input is split, so the bytes are the same.
            self.flush()
            self._send(data)
            return
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()

    def _send(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        self._forward(chunk)


def write_skeleton(cpio: CpioWriter, init: str) -> None:
    """What a root filesystem needs before init runs: a console for its stdio, mount points."""
    cpio.directory("dev", 0o755)
    cpio.device("dev/console", 0o600, "char", 5, 1)
    # The kernel falls back to /init when rdinit= is lost (a PXE setup that drops parameters).
    cpio.symlink("init", init.encode())
    cpio.directory("nix", 0o755)
    cpio.directory("nix/store", 0o755)
    for mount_point in ("proc", "run", "sys"):
        cpio.directory(mount_point, 0o755)
    cpio.directory("tmp", 0o1777)


def pack_store_path(cpio: CpioWriter, sp: StorePath, store: StoreFS, read_bytes: Callable[[int], None]) -> VerifiedPath:
    """Write one store path into the archive and return its NAR hash and size as read."""
    root = store.disk_path(sp.path)
    arc_root = sp.path.lstrip("/")
    hasher = NarHasher()
    try:
        for node in walk(root):
            name = f"{arc_root}/{node.relpath}" if node.relpath else arc_root
            hasher.node(node)
            if node.kind is NodeKind.DIRECTORY:
                cpio.directory(name, DIR_MODE)
            elif node.kind is NodeKind.SYMLINK:
                cpio.symlink(name, node.target)
            else:
                cpio.regular(name, EXEC_MODE if node.executable else FILE_MODE, node.size)
                for chunk in read_contents(node, CHUNK):
                    cpio.data(chunk)
                    hasher.data(chunk)
                    read_bytes(len(chunk))
        digest, size = hasher.finish()
    except (NarError, CpioError) as e:
        raise NetbuildError(f"{sp.path}: {e}") from None
    except OSError as e:
        if e.filename is None:
            raise  # writing the initrd failed, not reading the store: the caller reports it
        name = os.fsdecode(e.filename)
        raise NetbuildError(f"{sp.path}: cannot read {name}: {e.strerror}") from None
    if sp.nar_hash is not None and sp.nar_hash != digest:
        raise NetbuildError(
            f"{sp.path}: NAR hash mismatch: the closure says {format_nix32(sp.nar_hash)}, the files on disk "
            f"hash to {format_nix32(digest)} (was the path modified, or is the JSON from another store?)"
        )
    if sp.nar_size is not None and sp.nar_size != size:
        raise NetbuildError(
            f"{sp.path}: NAR size mismatch: the closure says {sp.nar_size}, the files on disk give {size}"
        )
    return VerifiedPath(sp.path, digest, size, sp.references)


def write_initrd(
    dest: BinaryIO,
    *,
    closure: Closure,
    store: StoreFS,
    init: str,
    compression: Compression,
    jobs: int,
    progress: Progress | None = None,
) -> InitrdResult:
    start = dest.tell()
    compressor = open_compressor(compression, dest.write, threads=jobs)
    sink = _Sink(compressor.write)
    cpio = CpioWriter(sink.write)
    write_skeleton(cpio, init)
    done_bytes = 0

    def count(n: int) -> None:
        nonlocal done_bytes
        done_bytes += n

    verified: list[VerifiedPath] = []
    for index, sp in enumerate(closure, start=1):
        verified.append(pack_store_path(cpio, sp, store, count))
        if progress is not None:
            progress(index, done_bytes)
    reg = registration(verified)
    cpio.file(REGISTRATION_NAME, FILE_MODE, reg)
    cpio.trailer()
    sink.flush()
    compressor.close()
    member = Member(
        role="store",
        offset=start,
        size=dest.tell() - start,
        compression=compression.name,
        plain_size=sink.size,
        plain_sha256=sink.sha256.hexdigest(),
        entries=cpio.entries,
    )
    return InitrdResult(verified=verified, members=[member], registration=reg)
