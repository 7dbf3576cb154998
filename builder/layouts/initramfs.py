"""The whole-store layout: every store path as files in the initramfs, init run straight from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from builder.cache import SegmentCache
from builder.footprint import store_rootfs_bytes
from builder.plan import BootPlan
from builder.preinit import preinit_program
from builder.run.memory import pages
from builder.writers.initrd import Progress, write_initrd
from builder.writers.members import InitrdResult, Written


def prepare(plan: BootPlan) -> None:
    return None  # the plan already holds everything this layout needs


def write(
    dest: BinaryIO,
    plan: BootPlan,
    prepared: None,
    *,
    progress: Progress | None,
    log: Callable[[str], None],
    written: Written | None = None,
) -> InitrdResult:
    log(f"packing {len(plan.closure)} store paths ({plan.compression})")
    options = plan.options
    cache = SegmentCache(options.cache_dir, options.cache_max_bytes) if options.cache_dir is not None else None
    return write_initrd(
        dest,
        closure=plan.closure,
        store=plan.store,
        init=plan.init,
        compression=plan.compression,
        jobs=plan.jobs,
        progress=progress,
        cache=cache,
        written=written,
    )


def rootfs_bytes(plan: BootPlan, initrd: InitrdResult) -> int:
    """What the kernel unpacks into its tmpfs root: the store's files, the registration, /init."""
    return (store_rootfs_bytes(plan.store, initrd.verified, plan.options.cache_dir)
            + pages(len(initrd.registration)) + pages(len(preinit_program(plan.init))))
