"""What an OUT directory or an ISO needs to boot, by builder/run/memory.py's rule: the statement in
its manifest.json when netbuild wrote one, else the rule applied to its files. `netbuild boot`'s
default memory and its warning come from here; memory.py itself reads no file."""

from __future__ import annotations

import os
from pathlib import Path

from builder.formats.iso import is_iso, read_file, read_iso
from builder.formats.kernel import KernelImageError, read_kernel_header
from builder.outcontract import BZIMAGE, INITRD, MANIFEST, ManifestError, kernel_in, parse_manifest, read_manifest
from builder.run.memory import boot_memory_mib


def boot_memory_of(directory: Path) -> int:
    """What the directory's image (or the ISO's) needs to boot: manifest.json's statement when
    netbuild wrote it, else the same rule applied to the files, guessing the initrd unpacks to four
    times its size."""
    if is_iso(directory):
        return _disc_memory(directory)
    try:
        return read_manifest(directory).boot_mib
    except ManifestError:
        pass
    try:
        initrd_bytes = (directory / INITRD).stat().st_size
        init_size = read_kernel_header(directory / (kernel_in(set(os.listdir(directory))) or BZIMAGE)).init_size
    except (OSError, KernelImageError):
        initrd_bytes, init_size = 0, 0
    return boot_memory_mib(kernel_init_size=init_size, initrd_bytes=initrd_bytes, rootfs_bytes=4 * initrd_bytes)


def _disc_memory(iso: Path) -> int:
    """A disc of an OUT carries its manifest.json; a chain ISO's image is not on it (the floor)."""
    listing = read_iso(iso)
    manifest = listing.file(f"/{MANIFEST}")
    try:
        if manifest is not None:
            return parse_manifest(read_file(iso, manifest), iso / MANIFEST).boot_mib
    except ManifestError:
        pass
    initrd = listing.file("/initrd")
    size = initrd.size if initrd is not None else 0
    return boot_memory_mib(kernel_init_size=0, initrd_bytes=size, rootfs_bytes=4 * size)
