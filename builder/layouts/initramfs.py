"""The whole-store layout: every store path as files in the initramfs, init run straight from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from builder.cache import SegmentCache
from builder.plan import BootPlan
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
