"""The VM layouts: a stage 1 only in the initrd; the store comes from the VM's host (recipes vm-9p, vm-disk).

    vm-9p    initrd = stage 1 · NUL padding to 4 · cpio holding /nix-path-registration
             The store is the host's /nix/store, which OUT/run-qemu shares read-only over virtio-9p
             (tag nix-store, as NixOS's qemu-vm.nix). Nothing of the closure is read or packed: the
             registration is made from the NAR hashes and sizes the closure JSON states (the guest
             reads the host's own files, so there is no copy that could differ from them), and a
             path whose JSON lacks them is hashed from disk. Build time does not grow with the
             closure's size; only the registration (a few hundred bytes a path) does.
    vm-disk  initrd = stage 1
             OUT/store.img: the closure's squashfs image (the squashfs layout's writer, byte for byte
             reproducible, with nix-path-registration at its root), which run-qemu attaches as a
             read-only virtio disk (as microvm.nix's store disk).

In both the stage 1 puts a writable overlay on /nix/store (tmpfs, or NIX_DISK_IMAGE: see
builder/stage1/store-vm.sh) and then runs init=. The stage 1 is chosen as the squashfs layout's is
(recipe field `stage1`; the built-in one loads the modules of builder/stage1/needs.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.closure import REGISTRATION_FILE, VerifiedPath, store_read_error
from builder.errors import NetbuildError
from builder.formats.cpio import CpioWriter
from builder.formats.nar import NarError, hash_path
from builder.layouts import Layout, write_then_read_back
from builder.layouts.squashfs import BuiltinStage1, choose_stage1, write_member, write_stage1_members
from builder.outcontract import STORE_IMG, Digest, file_digest
from builder.plan import BootPlan
from builder.progress import QUIET, Reporter
from builder.run.memory import pages
from builder.stage1.toplevel import ToplevelStage1
from builder.writers.members import InitrdResult
from builder.writers.registration import registration
from builder.writers.squashfs import mksquashfs_available, write_image

REGISTRATION_MODE = 0o444


@dataclass(frozen=True)
class Prepared:
    stage1: ToplevelStage1 | BuiltinStage1


def stated_paths(plan: BootPlan) -> list[VerifiedPath]:
    """The closure with the NAR hash and size its JSON states; hashed from disk where it states none
    (or narSize 0, old Nix databases' "not recorded")."""
    found = []
    for sp in plan.closure:
        if sp.nar_hash is not None and sp.nar_size:
            found.append(VerifiedPath(sp.path, sp.nar_hash, sp.nar_size, sp.references))
            continue
        try:
            digest, size = hash_path(plan.store.disk_path(sp.path))
        except (OSError, NarError) as e:
            raise store_read_error(sp, e) from None
        found.append(sp.verified(digest, size))
    return found


class VmLayout(Layout[Prepared]):
    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, plan: BootPlan) -> Prepared:
        if self.name == "vm-disk" and not mksquashfs_available():
            raise NetbuildError("mksquashfs is not installed, and the vm-disk layout needs it for store.img "
                                "(Debian: apt-get install squashfs-tools)")
        if self.name == "vm-9p" and plan.store.root != Path("/"):
            raise NetbuildError(f"--store-root {plan.store.root}: the vm-9p layout boots the host's own /nix/store "
                                "(run-qemu shares it), not a copy elsewhere; use vm-disk")
        return Prepared(stage1=choose_stage1(plan))

    def write(self, dest: BinaryIO, plan: BootPlan, prepared: Prepared, report: Reporter = QUIET) -> InitrdResult:
        members = write_stage1_members(dest, plan, prepared.stage1, report)
        if self.name == "vm-disk":
            image = _out_dir(dest) / STORE_IMG
            report.log(f"{STORE_IMG}: {len(plan.closure)} store paths ({plan.recipe.squashfs_compression})")
            assert plan.recipe.squashfs_compression is not None  # the recipe loader sets it for vm-disk
            made = write_image(image, closure=plan.closure, store=plan.store,
                               compression=plan.recipe.squashfs_compression, jobs=plan.jobs, report=report)
            report.log(f"{STORE_IMG}: {image.stat().st_size} bytes in {made.seconds:.1f} s")
            return InitrdResult(verified=made.verified, members=members, registration=made.registration,
                                companions=((STORE_IMG, file_digest(image)),))
        verified = stated_paths(plan)
        reg = registration(verified)
        report.log(f"registration: {len(verified)} store paths, from the closure's NAR hashes (nothing packed)")
        dest.write(b"\0" * (-dest.tell() % 4))  # an archive after a compressed one starts 4-aligned

        def fill(cpio: CpioWriter) -> None:
            cpio.file(REGISTRATION_FILE, REGISTRATION_MODE, reg)

        members.append(write_member(dest, "registration", plan.compression, plan.jobs, fill))
        return InitrdResult(verified=verified, members=members, registration=reg)

    def write_checked(self, path: Path, plan: BootPlan, prepared: Prepared,
                      report: Reporter = QUIET) -> tuple[InitrdResult, Digest]:
        """Written, then read back whole (a few MiB: the stage 1 and the registration). store.img was
        checked as mksquashfs made it: every NAR hash verified on the way in (writers/squashfs.py)."""
        return write_then_read_back(self, path, plan, prepared, report)

    def rootfs_bytes(self, plan: BootPlan, initrd: InitrdResult) -> int:
        """The stage 1 alone is unpacked into RAM; the store stays on the host or the disk."""
        return pages(initrd.plain_size)


def _out_dir(dest: BinaryIO) -> Path:
    """OUT's staging directory, where the initrd being written lies: store.img goes beside it."""
    name = getattr(dest, "name", None)
    if not isinstance(name, str):
        raise NetbuildError("the vm-disk layout writes store.img beside the initrd, which needs a file")
    return Path(os.path.dirname(os.path.abspath(name)))


VM_9P = VmLayout("vm-9p")
VM_DISK = VmLayout("vm-disk")
