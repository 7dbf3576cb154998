"""The squashfs image of the closure, made by mksquashfs (Debian's squashfs-tools), reproducibly.

Its root holds every store path (by base name) and `nix-path-registration`, as nixpkgs' netboot
image does. netbuild does not hand mksquashfs the store's directories: it walks each store path
once, in NAR order, and streams it to `mksquashfs -tar` as a tar archive while the same walk feeds
the NAR hasher. So one read of the store both verifies (or computes) every narHash and fills the
image, and the image holds exactly what the NAR holds, with the store's canonical metadata rather
than whatever the copy on disk has:

- modes 0444/0555 for files, 0555 for directories, owner 0:0 (-all-root), mtime 1 everywhere
  (-all-time, -mkfs-time, -root-time), no xattrs, no hard links (every file its own inode);
- entries in path order; mksquashfs sorts each directory itself, and with `-reproducible` its
  output does not depend on the number of processors.

The tar headers are GNU format, written by the standard library's tarfile (long names and link
targets, and file names that are not UTF-8, pass through byte for byte).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.closure import REGISTRATION_FILE, Closure, StoreFS, StorePath, VerifiedPath, store_read_error
from builder.errors import NetbuildError, is_write_error
from builder.formats import CHUNK, Buffer
from builder.formats.nar import DIR_MODE, EXEC_MODE, FILE_MODE, NarError, NarHasher, NodeKind, read_contents, walk
from builder.progress import QUIET, Reporter
from builder.writers.registration import registration

MKSQUASHFS = "mksquashfs"
BLOCK_SIZE = "1M"  # as nixpkgs' make-squashfs: better compression than the 128K default
STORE_MTIME = 1
_BLOCK = tarfile.BLOCKSIZE

# Codec → the levels mksquashfs accepts with -Xcompression-level (None: it takes no level).
SQUASHFS_LEVELS: dict[str, range | None] = {"zstd": range(1, 23), "gzip": range(1, 10), "xz": None, "lz4": None,
                                            "lzo": None}
_CHOICES = "zstd[:1-22], gzip[:1-9], xz, lz4 or lzo"


class SquashfsSpecError(ValueError):
    """A squashfs compression spec mksquashfs does not take."""


@dataclass(frozen=True)
class SquashfsCompression:
    name: str
    level: int | None  # None: mksquashfs's default for the codec

    def __str__(self) -> str:
        return self.name if self.level is None else f"{self.name}:{self.level}"

    def arguments(self) -> list[str]:
        args = ["-comp", self.name]
        if self.level is not None:
            args += ["-Xcompression-level", str(self.level)]
        return args


def parse_squashfs_compression(spec: str) -> SquashfsCompression:
    """'zstd', 'zstd:19', 'xz', 'gzip:9', 'lz4', 'lzo' → SquashfsCompression."""
    name, colon, level_text = spec.strip().partition(":")
    if name not in SQUASHFS_LEVELS:
        raise SquashfsSpecError(f"squashfs compression {spec!r}: unknown codec {name!r}; choose {_CHOICES}")
    if not colon:
        return SquashfsCompression(name, None)
    levels = SQUASHFS_LEVELS[name]
    if levels is None:
        raise SquashfsSpecError(f"squashfs compression {spec!r}: {name} takes no level; choose {_CHOICES}")
    if not level_text.isdigit() or int(level_text) not in levels:
        raise SquashfsSpecError(
            f"squashfs compression {spec!r}: {name} level must be {levels.start}..{levels.stop - 1}; choose {_CHOICES}"
        )
    return SquashfsCompression(name, int(level_text))


@dataclass(frozen=True)
class SquashfsImage:
    verified: list[VerifiedPath]
    registration: bytes
    seconds: float  # how long making the image took, for the log


def mksquashfs_available() -> bool:
    return shutil.which(MKSQUASHFS) is not None


def mksquashfs_command(image: Path, compression: SquashfsCompression, jobs: int) -> list[str]:
    return [
        MKSQUASHFS, "-", str(image), "-tar", "-noappend", "-quiet", "-no-progress",
        *compression.arguments(), "-b", BLOCK_SIZE,
        "-reproducible", "-all-root", "-no-xattrs", "-no-hardlinks", "-no-exports", "-no-recovery",
        "-mkfs-time", str(STORE_MTIME), "-all-time", str(STORE_MTIME),
        "-root-time", str(STORE_MTIME), "-root-mode", "755",
        "-processors", str(max(1, jobs)),
    ]


class _TarStream:
    """GNU tar records for mksquashfs -tar, written to its stdin."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink

    def _header(self, name: str, kind: bytes, mode: int, *, size: int = 0, target: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.linkname = target
        info.mtime = STORE_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        # surrogateescape: names that are not UTF-8 (os.fsdecode's) go back to their original bytes.
        self._sink.write(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))

    def directory(self, name: str) -> None:
        self._header(name, tarfile.DIRTYPE, DIR_MODE)

    def symlink(self, name: str, target: bytes) -> None:
        self._header(name, tarfile.SYMTYPE, 0o777, target=os.fsdecode(target))

    def regular(self, name: str, executable: bool, size: int) -> None:
        self._header(name, tarfile.REGTYPE, EXEC_MODE if executable else FILE_MODE, size=size)

    def data(self, chunk: Buffer) -> None:
        self._sink.write(chunk)

    def end_file(self, size: int) -> None:
        self._sink.write(b"\0" * (-size % _BLOCK))

    def file(self, name: str, content: bytes) -> None:
        self.regular(name, False, len(content))
        self.data(content)
        self.end_file(len(content))

    def close(self) -> None:
        self._sink.write(b"\0" * (2 * _BLOCK))


def _stream_store_path(
    tar: _TarStream, sp: StorePath, store: StoreFS, read_bytes: Callable[[int], None]
) -> VerifiedPath:
    """Write one store path into the tar stream; return its NAR hash and size as read."""
    hasher = NarHasher()
    try:
        for node in walk(store.disk_path(sp.path)):
            name = f"{sp.basename}/{node.relpath}" if node.relpath else sp.basename
            hasher.node(node)
            if node.kind is NodeKind.DIRECTORY:
                tar.directory(name)
            elif node.kind is NodeKind.SYMLINK:
                tar.symlink(name, node.target)
            else:
                tar.regular(name, node.executable, node.size)
                for chunk in read_contents(node, CHUNK):
                    tar.data(chunk)
                    hasher.data(chunk)
                    read_bytes(len(chunk))
                tar.end_file(node.size)
        digest, size = hasher.finish()
    except (NarError, OSError) as e:
        if is_write_error(e):
            raise  # the pipe to mksquashfs, not the store: the caller reports it
        raise store_read_error(sp, e) from None
    return sp.verified(digest, size)


def write_image(
    image: Path,
    *,
    closure: Closure,
    store: StoreFS,
    compression: SquashfsCompression,
    jobs: int,
    report: Reporter = QUIET,
) -> SquashfsImage:
    """Make the squashfs image of the closure at `image` (created or replaced)."""
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}  # the times are given explicitly
    env["LC_ALL"] = "C"
    verified: list[VerifiedPath] = []
    done_bytes = 0

    def count(n: int) -> None:
        nonlocal done_bytes
        done_bytes += n

    finished = False
    with tempfile.TemporaryFile() as messages:
        try:
            proc = subprocess.Popen(mksquashfs_command(image, compression, jobs), stdin=subprocess.PIPE,
                                    stdout=messages, stderr=messages, env=env)
        except OSError as e:
            raise NetbuildError(
                f"cannot run {MKSQUASHFS} (Debian: apt-get install squashfs-tools): {e.strerror}"
            ) from None
        assert proc.stdin is not None
        try:
            tar = _TarStream(proc.stdin)
            for index, sp in enumerate(closure, start=1):
                verified.append(_stream_store_path(tar, sp, store, count))
                report.progress(index, done_bytes)
            reg = registration(verified)
            tar.file(REGISTRATION_FILE, reg)
            tar.close()
            proc.stdin.close()
            finished = True
        except BrokenPipeError:
            pass  # mksquashfs stopped reading: its exit status and messages say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if not proc.stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        status = proc.wait()
        if status != 0 or not finished:
            messages.seek(0)
            text = messages.read().decode(errors="replace").strip().splitlines()
            last = text[-1] if text else "no message"
            raise NetbuildError(f"{MKSQUASHFS} failed writing {image} (exit status {status}, after "
                                f"{len(verified)} of {len(closure)} store paths): {last}")
    return SquashfsImage(verified=verified, registration=reg, seconds=time.monotonic() - started)
