"""The whole-store layout: every store path as files in the initramfs, init run straight from it.

Its initrd is checked as it is written: the writer announces each member as soon as its bytes
are in the file, and a WrittenCheck (builder/checks/written.py) hashes it there against the
sha256 recorded when the member was made. Members copied from the segment cache are checked the
same way, where they land; if any differ, their cache entries are dropped and the initrd written
once more (packing those groups afresh), so a damaged entry is never shipped and costs one rewrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from builder.cache import SegmentCache, open_cache
from builder.checks.written import DamagedMembers, WrittenCheck
from builder.footprint import store_rootfs_bytes
from builder.layouts import Layout
from builder.outcontract import Digest
from builder.plan import BootPlan
from builder.preinit import preinit_program
from builder.progress import QUIET, Reporter
from builder.run.memory import pages
from builder.writers.initrd import write_initrd
from builder.writers.members import InitrdResult, Written


class InitramfsLayout(Layout[None]):
    name = "initramfs"

    def prepare(self, plan: BootPlan) -> None:
        return None  # the plan already holds everything this layout needs

    def write(self, dest: BinaryIO, plan: BootPlan, prepared: None, report: Reporter = QUIET, *,
              written: Written | None = None) -> InitrdResult:
        """`written`, if given, is told each batch of members as soon as their bytes are in dest."""
        cache = _open(plan, report)
        try:
            return self._write(dest, plan, report, written, cache)
        finally:
            if cache is not None:
                cache.close()

    def _write(self, dest: BinaryIO, plan: BootPlan, report: Reporter, written: Written | None,
               cache: SegmentCache | None) -> InitrdResult:
        report.log(f"packing {len(plan.closure)} store paths ({plan.compression})")
        return write_initrd(
            dest,
            closure=plan.closure,
            store=plan.store,
            init=plan.init,
            compression=plan.compression,
            jobs=plan.jobs,
            report=report,
            cache=cache,
            written=written,
            arch=plan.kernel.header.arch,
        )

    def write_checked(self, path: Path, plan: BootPlan, prepared: None,
                      report: Reporter = QUIET) -> tuple[InitrdResult, Digest]:
        cache = _open(plan, report)  # once: a faulty cache is warned about once
        try:
            return self._write_checked(path, plan, report, cache)
        finally:
            if cache is not None:
                cache.close()

    def _write_checked(self, path: Path, plan: BootPlan, report: Reporter,
                       cache: SegmentCache | None) -> tuple[InitrdResult, Digest]:
        for attempt in (1, 2):
            with open(path, "wb") as f, WrittenCheck(path) as check:
                # The check reads each member as soon as the writer has put it in the file.
                initrd = self._write(f, plan, report, check.written, cache)
                f.flush()
                report.log("checking the initrd")
                try:
                    return initrd, check.finish(initrd.members)
                except DamagedMembers as e:
                    damaged = e
            keys = {m.cache_key for m in damaged.members}
            if attempt == 2 or None in keys or cache is None:
                raise damaged
            for key in sorted(k for k in keys if k is not None):
                cache.drop(key)
            report.log(f"cache: {len(keys)} damaged segment(s) dropped; writing the initrd again")
        raise AssertionError("unreachable")

    def rootfs_bytes(self, plan: BootPlan, initrd: InitrdResult) -> int:
        """What the kernel unpacks into its tmpfs root: the store's files, the registration, /init."""
        return (store_rootfs_bytes(plan.store, initrd.verified, plan.options.cache_dir)
                + pages(len(initrd.registration)) + pages(len(preinit_program(plan.init, plan.kernel.header.arch))))


def _open(plan: BootPlan, report: Reporter) -> SegmentCache | None:
    options = plan.options
    if options.cache_dir is None:
        return None
    return open_cache(options.cache_dir, options.cache_max_bytes, report.warn)


INITRAMFS = InitramfsLayout()
