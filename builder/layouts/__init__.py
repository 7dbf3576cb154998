"""Initrd layouts: how the closure is laid out in the initrd (the recipe's `layout`).

Each layout is an object of its module (initramfs.INITRAMFS, squashfs.SQUASHFS, vm.VM_9P, vm.VM_DISK)
doing four things:

    prepare(plan) -> Prepared
        Everything that can be refused before a byte is written (missing BusyBox, modules built
        for another kernel, …); returns what `write` needs. Raises NetbuildError.
    write(dest, plan, prepared, report) -> InitrdResult
        Writes the initrd to dest (positioned at 0) and describes the members it wrote.
    write_checked(path, plan, prepared, report) -> (InitrdResult, (size, sha256))
        Writes the initrd file at path and checks it as this layout's initrd must be checked
        before it is published (builder/checks/), giving the file's digest for the manifest.
    rootfs_bytes(plan, initrd) -> int
        What the kernel unpacks into its tmpfs root from that initrd, in whole pages: the boot
        memory follows it (builder/run/memory.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from builder.progress import QUIET, Reporter

if TYPE_CHECKING:
    from builder.outcontract import Digest
    from builder.plan import BootPlan
    from builder.writers.members import InitrdResult

Prepared = TypeVar("Prepared")


class Layout(Protocol[Prepared]):
    name: str  # the recipe's `layout`

    def prepare(self, plan: BootPlan) -> Prepared: ...

    def write(self, dest: BinaryIO, plan: BootPlan, prepared: Prepared, report: Reporter = QUIET) -> InitrdResult: ...

    def write_checked(self, path: Path, plan: BootPlan, prepared: Prepared,
                      report: Reporter = QUIET) -> tuple[InitrdResult, Digest]: ...

    def rootfs_bytes(self, plan: BootPlan, initrd: InitrdResult) -> int: ...


def write_then_read_back(layout: Layout[Prepared], path: Path, plan: BootPlan, prepared: Prepared,
                         report: Reporter) -> tuple[InitrdResult, Digest]:
    """write_checked for a layout that records no digest as it writes (a stage 1 copied or compressed in
    one stream, an image mksquashfs made): the initrd written whole, then read back whole, every member
    decompressed and parsed again."""
    from builder.checks.selfcheck import check_initrd
    from builder.outcontract import file_digest

    with open(path, "wb") as f:
        initrd = layout.write(f, plan, prepared, report)
    report.log("checking the initrd")
    check_initrd(path, initrd.members)
    return initrd, file_digest(path)


def layout_for(name: str) -> Layout[Any]:
    """The layout a recipe names (the recipe loader has checked the name against recipe.LAYOUTS)."""
    from builder.layouts.initramfs import INITRAMFS
    from builder.layouts.squashfs import SQUASHFS
    from builder.layouts.vm import VM_9P, VM_DISK

    layouts: dict[str, Layout[Any]] = {INITRAMFS.name: INITRAMFS, SQUASHFS.name: SQUASHFS, VM_9P.name: VM_9P,
                                       VM_DISK.name: VM_DISK}
    return layouts[name]
