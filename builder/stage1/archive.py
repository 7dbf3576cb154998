"""The built-in stage 1 as cpio entries: BusyBox, the init script, the kernel modules to load.

    dev/console                     the console the kernel opens for /init's stdio
    bin/busybox                     static; /init installs its applet links at boot
    init                            builder/stage1/init.sh with the module list filled in
    lib/netbuild/store.sh           how the layout mounts the store: store-<layout>.sh (the VM
                                    layouts' after store-vm.sh, what they share), sourced by init
    lib/modules/<release>/<path>    each module, decompressed, at its path in the tree

Entries follow the store's conventions (owner 0:0, mtime 1, nlink 1) so the archive is the same
bytes for the same inputs; the compression and member bookkeeping are the layout's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from builder.errors import NetbuildError
from builder.filecopy import read_range
from builder.formats.cpio import CpioWriter
from builder.stage1.modules import KernelModule

TEMPLATE = "init.sh"
STORE_SCRIPT = "lib/netbuild/store.sh"
# The fragments that make each layout's store.sh, in order.
_STORE_FRAGMENTS = {"squashfs": ("store-squashfs.sh",), "vm-9p": ("store-vm.sh", "store-vm-9p.sh"),
                    "vm-disk": ("store-vm.sh", "store-vm-disk.sh")}
# What a module path and a kernel release may hold to be spliced into the shell script unquoted.
_SAFE_WORD = re.compile(r"[A-Za-z0-9._+/,-]+")


def init_script(modules: Sequence[KernelModule], release: str) -> bytes:
    """The stage 1's /init: the template with the module list (load order) and release filled in."""
    for word in [release, *(m.plain_relpath for m in modules)]:
        if not _SAFE_WORD.fullmatch(word):
            raise NetbuildError(f"kernel module path or release {word!r} has characters the stage 1 cannot carry")
    template = files("builder.stage1").joinpath(TEMPLATE).read_text(encoding="utf-8")
    module_list = " ".join(m.plain_relpath for m in modules)
    return template.replace("@modules@", module_list).replace("@release@", release).encode()


def store_script(layout: str) -> bytes:
    """lib/netbuild/store.sh for the layout: its fragments, one after the other."""
    fragments = files("builder.stage1")
    return "".join(fragments.joinpath(name).read_text(encoding="utf-8") for name in _STORE_FRAGMENTS[layout]).encode()


def _parents(path: str) -> list[str]:
    """'a/b/c.ko' -> ['a', 'a/b']."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def write_stage1(cpio: CpioWriter, *, busybox: Path, modules: Sequence[KernelModule], release: str,
                 layout: str = "squashfs") -> None:
    """Write the stage 1's entries (not the trailer) into cpio."""
    cpio.directory("dev", 0o755)
    cpio.device("dev/console", 0o600, "char", 5, 1)
    cpio.directory("bin", 0o755)
    size = busybox.stat().st_size
    cpio.regular("bin/busybox", 0o555, size)
    with open(busybox, "rb") as f:
        try:
            for chunk in read_range(f, size):
                cpio.data(chunk)
        except EOFError:
            raise NetbuildError(f"{busybox}: shrank while being read") from None
    cpio.file("init", 0o555, init_script(modules, release))
    made: set[str] = set()
    for parent in _parents(STORE_SCRIPT):
        cpio.directory(parent, 0o755)
        made.add(parent)
    cpio.file(STORE_SCRIPT, 0o444, store_script(layout))
    for module in modules:
        path = f"lib/modules/{release}/{module.plain_relpath}"
        for parent in _parents(path):
            if parent not in made:
                cpio.directory(parent, 0o755)
                made.add(parent)
        cpio.file(path, 0o444, module.elf)
