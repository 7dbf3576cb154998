"""FAT file system images: the EFI System Partition an ISO's UEFI El Torito entry boots.

Made with Debian's dosfstools and mtools rather than a loop mount (no root) or a FAT writer of our
own: mkfs.fat lays out the file system, mcopy fills it. Both are made reproducible here — mkfs.fat
with --invariant and a volume id we choose (it would take both from the clock), mtools with a fixed
SOURCE_DATE_EPOCH and TZ=UTC (it stamps files and directories with the local time of the moment),
so the same files give the same image bytes. Every file is read back with mtools before the image is
used.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.errors import NetbuildError
from builder.filecopy import sha256_of
from builder.formats import CHUNK

# 1980-01-01T00:00:00Z: the first moment a FAT directory entry can record (the store's mtime 1
# cannot be written there); ISO images use it too, so that the two file systems agree.
FAT_EPOCH = 315532800
_MIB = 1 << 20
TOOLS = {"mkfs.fat": "dosfstools", "mcopy": "mtools", "mmd": "mtools", "mdir": "mtools"}


@dataclass(frozen=True)
class FatFile:
    path: str  # inside the file system, e.g. EFI/BOOT/BOOTX64.EFI
    source: Path | bytes


def check_tools() -> None:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise NetbuildError(f"{tool} not found: the UEFI boot image is a FAT file system made with it "
                                f"(Debian: apt install {package})")


def image_size(payload: int) -> int:
    """Bytes of FAT image for `payload` bytes of files: the files, two FATs (mkfs.fat picks clusters of
    at least 2 KiB here, so they take less than 1/256 of it), the reserved sectors, root directory
    and cluster rounding (well within 1 MiB), in whole MiB. mcopy fails on a full disk, so a
    wrong guess is an error, never a truncated file."""
    return -(-(payload + payload // 256 + _MIB) // _MIB) * _MIB


def _size(source: Path | bytes) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTOOLS")}
    # No user or system drive configuration, no checks of a geometry meant for floppies, the same
    # times in any time zone.
    env.update(MTOOLSRC="/dev/null", MTOOLS_SKIP_CHECK="1", SOURCE_DATE_EPOCH=str(FAT_EPOCH), TZ="UTC", LC_ALL="C")
    return env


def _run(command: Sequence[str], what: str, stdout: int | None = subprocess.DEVNULL) -> bytes:
    try:
        proc = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, env=_env(), check=False)
    except OSError as e:
        raise NetbuildError(f"{what}: cannot run {command[0]}: {e.strerror}") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise NetbuildError(f"{what}: {command[0]} failed: {lines[-1] if lines else f'status {proc.returncode}'}")
    return proc.stdout or b""


def make_fat_image(dest: Path, files: Sequence[FatFile], *, volume_id: int, label: str) -> int:
    """Write dest, a FAT file system holding `files` (8.3 upper-case names need no long-name entries);
    returns its size. Each file is read back through mtools and compared before returning."""
    check_tools()
    size = image_size(sum(_size(f.source) for f in files))
    what = f"the UEFI boot image {dest.name}"
    _run(["mkfs.fat", "--invariant", "-i", f"{volume_id:08x}", "-n", label[:11], "-C", str(dest),
          str(size // 1024)], what)
    image = f"{dest}"
    directories = sorted({"/".join(f.path.split("/")[:i]) for f in files for i in range(1, f.path.count("/") + 1)})
    if directories:
        _run(["mmd", "-i", image, *(f"::/{d}" for d in directories)], what)
    for f in files:
        if isinstance(f.source, bytes):
            staged = dest.with_name(dest.name + ".file")
            staged.write_bytes(f.source)
            try:
                _run(["mcopy", "-i", image, str(staged), f"::/{f.path}"], what)
            finally:
                staged.unlink()
        else:
            _run(["mcopy", "-i", image, str(f.source), f"::/{f.path}"], what)
    for f in files:
        if fat_file_sha256(dest, 0, f.path) != sha256_of(f.source):
            raise NetbuildError(f"self-check: {what}: {f.path} reads back different from what was copied in")
    return size




def _drive(image: Path, offset: int) -> str:
    return f"{image}@@{offset}" if offset else str(image)  # mtools' syntax for a file system inside a file


def fat_file_sha256(image: Path, offset: int, path: str) -> str:
    """The sha256 of one file of the FAT file system at `offset` in `image`, as mtools reads it."""
    h = hashlib.sha256()
    command = ["mcopy", "-i", _drive(image, offset), f"::/{path}", "-"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert proc.stdout is not None
    while chunk := proc.stdout.read(CHUNK):
        h.update(chunk)
    errors = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if proc.wait() != 0:
        raise NetbuildError(f"{image}: the FAT file system at offset {offset} has no readable {path} ({errors})")
    return h.hexdigest()


def copy_fat_file(image: Path, offset: int, path: str, dest: Path) -> None:
    _run(["mcopy", "-n", "-i", _drive(image, offset), f"::/{path}", str(dest)], f"{image}: {path}")


# mdir's listing: "Directory for ::/EFI/BOOT", then one line per entry: short name, extension, size
# or <DIR>, date, time (in whatever format this mtools prints them), and the long name if any.
_DIRECTORY = re.compile(r"^Directory for ::(/.*)$")
_ENTRY = re.compile(r"^(\S+)(?: +(\S{1,3}))? +(\d+|<DIR>) +\d+[-./]\d+[-./]\d+ +\d+:\d+\S*(?: +(.+))?$")


def list_fat(image: Path, offset: int) -> list[tuple[str, int]]:
    """(path, size) of every file in the FAT file system at `offset` in `image`."""
    listing = _run(["mdir", "-/", "-a", "-i", _drive(image, offset), "::/"], f"{image}: the FAT file system at "
                   f"offset {offset}", stdout=subprocess.PIPE).decode(errors="replace")
    files, directory = [], "/"
    for line in listing.splitlines():
        if (header := _DIRECTORY.match(line.strip())) is not None:
            directory = header.group(1).rstrip("/") + "/"
        elif (entry := _ENTRY.match(line.strip())) is not None and entry.group(3) != "<DIR>":
            name = entry.group(4) or (entry.group(1) + (f".{entry.group(2)}" if entry.group(2) else ""))
            files.append((directory.lstrip("/") + name, int(entry.group(3))))
    return sorted(files)
