"""Initrd layouts: how the closure is laid out in the initrd (the recipe's `layout`).

Each layout is a module here named after it, offering two functions:

    prepare(plan: BootPlan) -> object
        Everything that can be refused before a byte is written (missing BusyBox, modules built
        for another kernel, …); returns what `write` needs. Raises NetbuildError.
    write(dest: BinaryIO, plan: BootPlan, prepared: object, *, progress, log) -> InitrdResult
        Writes the initrd to dest (positioned at 0) and describes the members it wrote.
    rootfs_bytes(plan: BootPlan, initrd: InitrdResult) -> int
        What the kernel unpacks into its tmpfs root from that initrd, in whole pages: the boot
        memory follows it (builder/run/memory.py).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def layout_module(name: str) -> ModuleType:
    # The recipe loader has already checked the name against recipe.LAYOUTS.
    return importlib.import_module(f"builder.layouts.{name}")
