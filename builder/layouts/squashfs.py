"""The squashfs layout (nixpkgs' netboot layout): a stage 1, then the store as a squashfs image.

    initrd = stage 1 archive(s) · NUL padding to 4 · plain cpio holding /nix-store.squashfs

The stage 1 mounts the image on /nix/.ro-store, a tmpfs on /nix/.rw-store and an overlay of the two
on /nix/store, then switches to init= (see builder/stage1/init.sh). It is, per the recipe's `stage1`:

- the system's own stage 1 (a NixOS system's knows this convention) — its boot.json's `initrd`, or
  without a boot.json the toplevel's `initrd` — copied byte for byte; "auto" takes it whenever the
  system has one;
- otherwise netbuild's built-in stage 1: BusyBox from the closure (or --busybox), the modules
  loop/squashfs/overlay and their dependencies from the toplevel's kernel-modules (or --modules),
  compressed like any initrd member (--compress / the recipe's `compress`).

The image is already compressed (the recipe's `squashfs_compress`), so its archive is not compressed
again. Every refusal happens in prepare(), before anything is written; the initrd is read back whole
once written (write_checked).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.closure import StoreFS, owner
from builder.errors import NetbuildError
from builder.formats import CHUNK, Buffer
from builder.formats.compress import Compression
from builder.formats.cpio import MAX_FILE_SIZE, CpioWriter
from builder.formats.initrd import Member
from builder.formats.streams import open_compressor
from builder.layouts import Layout, write_then_read_back
from builder.outcontract import Digest
from builder.plan import BootPlan
from builder.progress import QUIET, Reporter
from builder.run.memory import pages
from builder.stage1.archive import write_stage1
from builder.stage1.busybox import busybox_from_closure, busybox_from_file
from builder.stage1.modules import KernelModule, ModulesTree, resolve_modules, unresolved_optional
from builder.stage1.needs import NEEDS
from builder.stage1.toplevel import ToplevelStage1, read_members
from builder.writers.members import InitrdResult
from builder.writers.squashfs import SquashfsCompression, mksquashfs_available, write_image

IMAGE_NAME = "nix-store.squashfs"  # where nixpkgs' netboot stage 1 looks for it
IMAGE_MODE = 0o444


@dataclass(frozen=True)
class BuiltinStage1:
    busybox: Path  # on this machine
    busybox_origin: str  # the store path of the binary, or "--busybox FILE"
    modules: list[KernelModule]  # load order
    modules_origin: str
    release: str
    lacking: tuple[str, ...] = ()  # the layout's optional modules that the tree has not (stage1/needs.py)


@dataclass(frozen=True)
class Prepared:
    stage1: ToplevelStage1 | BuiltinStage1
    squashfs: SquashfsCompression


def _prepare(plan: BootPlan) -> Prepared:
    recipe = plan.recipe
    assert recipe.squashfs_compression is not None and recipe.stage1 is not None  # the recipe loader sets both
    if not mksquashfs_available():
        raise NetbuildError(f"mksquashfs is not installed, and the {recipe.layout} layout needs it "
                            "(Debian: apt-get install squashfs-tools)")
    return Prepared(stage1=choose_stage1(plan), squashfs=recipe.squashfs_compression)


def choose_stage1(plan: BootPlan) -> ToplevelStage1 | BuiltinStage1:
    """The stage 1 the recipe's `stage1` picks: the toplevel's own, or netbuild's built-in one for the
    recipe's layout. Every layout with a stage 1 (recipe.STAGE1_LAYOUTS) chooses it here."""
    recipe = plan.recipe
    own = plan.system_initrd
    builtin_options = [name for name, value in (("--busybox", plan.options.busybox),
                                                ("--modules", plan.options.modules)) if value is not None]
    if recipe.stage1 == "toplevel" or (recipe.stage1 == "auto" and own is not None):
        if own is None:
            toplevel = plan.toplevel or "the closure (no toplevel)"
            where = f"{plan.bootspec.file} names" if plan.bootspec is not None else f"{toplevel} has"
            raise NetbuildError(f"recipe {recipe.name}: stage1 = \"toplevel\", but {where} no `initrd`")
        if builtin_options:
            verb = "apply" if len(builtin_options) > 1 else "applies"
            raise NetbuildError(
                f"{' and '.join(builtin_options)} {verb} only to netbuild's built-in stage 1, but the toplevel's "
                f"own initrd {own} is used; drop it, or use a recipe with stage1 = \"builtin\""
            )
        stage1 = toplevel_stage1(plan, own)
        _check_menu_shares(plan, stage1)
        return stage1
    return builtin_stage1(plan)


def _in_closure(plan: BootPlan, path: str, what: str) -> str:
    """Follow path's symlinks under the store root; the result must belong to the closure."""
    resolved = plan.store.resolve(path)
    if owner(resolved) not in plan.closure:
        raise NetbuildError(f"{what} {path} leads to {resolved}, which is not in the closure")
    return resolved


def _check_menu_shares(plan: BootPlan, stage1: ToplevelStage1) -> None:
    # netboot.ipxe's menu entries share this initrd, so its stage 1 must be each one's own (the built-in
    # stage 1 belongs to the kernel alone, which they share).
    for entry in plan.menu.entries if plan.menu is not None else ():
        theirs = _in_closure(plan, entry.initrd, f"specialisation {entry.name}'s initrd") if entry.initrd else None
        if theirs != stage1.store_path:
            raise NetbuildError(
                f"specialisation {entry.name!r} has {f'the stage 1 {theirs}' if theirs else 'no stage 1'}, not the "
                f"main system's {stage1.store_path}, and netboot.ipxe's entries share one initrd: build it into an "
                f"OUT of its own with --specialisation {entry.name}, or build without the menu (--menu-timeout 0)"
            )


def toplevel_stage1(plan: BootPlan, path: str) -> ToplevelStage1:
    resolved = _in_closure(plan, path, "the toplevel's initrd")
    disk = plan.store.disk_path(resolved)
    if not disk.is_file():
        raise NetbuildError(f"the toplevel's initrd {resolved} is not a regular file")
    members = read_members(disk, f"the toplevel's initrd {resolved}")
    return ToplevelStage1(store_path=resolved, disk=disk, size=disk.stat().st_size, members=members)


def builtin_stage1(plan: BootPlan) -> BuiltinStage1:
    release = plan.kernel.header.release
    if not release:
        raise NetbuildError(f"{plan.kernel.origin} has no version string, so its modules cannot be matched to it")
    if plan.options.busybox is not None:
        busybox, busybox_origin = (busybox_from_file(plan.options.busybox, plan.kernel.arch),
                                  f"--busybox {plan.options.busybox}")
    else:
        busybox_origin, busybox = busybox_from_closure(plan.closure, plan.store, plan.kernel.arch)
    needs = NEEDS[plan.recipe.layout]
    tree = _modules_tree(plan, release, needs.required)
    modules = resolve_modules(tree, needs.required, release, optional=needs.optional, layout=plan.recipe.layout)
    return BuiltinStage1(busybox=busybox, busybox_origin=busybox_origin, modules=modules,
                         modules_origin=tree.label, release=release,
                         lacking=tuple(unresolved_optional(tree, needs.optional)))


def _modules_tree(plan: BootPlan, release: str, wanted: tuple[str, ...]) -> ModulesTree:
    given = plan.options.modules
    if given is not None:
        directory = Path(os.path.abspath(given))
        if not directory.is_dir():
            raise NetbuildError(f"--modules {given} does not exist or is not a directory")
        nested = directory / "lib" / "modules" / release  # a kernel-modules-shaped directory
        chosen = nested if nested.is_dir() else directory
        return ModulesTree(f"--modules {chosen}", str(chosen), StoreFS(Path("/")))
    link = f"{plan.toplevel}/kernel-modules" if plan.toplevel is not None else None
    if link is None or not os.path.lexists(plan.store.disk_path(link)):
        where = "the toplevel has no kernel-modules" if link else "there is no toplevel with kernel-modules"
        raise NetbuildError(
            f"the built-in stage 1 loads {', '.join(wanted)} as kernel modules, but {where}; "
            f"pass --modules DIR (e.g. /lib/modules/{release})"
        )
    resolved = _in_closure(plan, link, "the toplevel's kernel-modules")
    tree = f"{resolved}/lib/modules/{release}"
    if not plan.store.disk_path(tree).is_dir():
        base = plan.store.disk_path(f"{resolved}/lib/modules")
        present = sorted(os.listdir(base)) if base.is_dir() else []
        raise NetbuildError(
            f"the toplevel's kernel-modules {resolved} has no lib/modules/{release} for the kernel to boot "
            f"(it has: {', '.join(present) or 'nothing'})"
        )
    return ModulesTree(tree, tree, plan.store)


class _MemberSink:
    """Counts and hashes a member's plain stream on its way to the compressor."""

    def __init__(self, forward: Callable[[Buffer], None]) -> None:
        self._forward = forward
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Buffer) -> None:
        self.sha256.update(data)
        self.size += len(data)
        self._forward(data)


def _writer(dest: BinaryIO) -> Callable[[Buffer], None]:
    def write(piece: Buffer) -> None:
        dest.write(piece)
    return write


def write_member(
    dest: BinaryIO, role: str, compression: Compression, jobs: int, fill: Callable[[CpioWriter], None]
) -> Member:
    """One archive, written by fill, compressed as one member."""
    start = dest.tell()
    compressor = open_compressor(compression, _writer(dest), threads=jobs)
    sink = _MemberSink(compressor.write)
    cpio = CpioWriter(sink.write)
    fill(cpio)
    cpio.trailer()
    compressor.close()
    return Member(role=role, offset=start, size=dest.tell() - start, compression=compression.name,
                  plain_size=sink.size, plain_sha256=sink.sha256.hexdigest(), entries=cpio.entries)


def copy_toplevel_stage1(dest: BinaryIO, stage1: ToplevelStage1) -> list[Member]:
    start = dest.tell()
    copied = 0
    with open(stage1.disk, "rb") as f:
        while chunk := f.read(CHUNK):
            dest.write(chunk)
            copied += len(chunk)
    if copied != stage1.size:
        raise NetbuildError(f"the toplevel's initrd {stage1.store_path} changed size while being copied")
    return [
        Member(role=m.role, offset=start + m.offset, size=m.size, compression=m.compression,
               plain_size=m.plain_size, plain_sha256=m.plain_sha256, entries=m.entries)
        for m in stage1.members
    ]


def _image_dir(dest: BinaryIO) -> str | None:
    """Beside the initrd being written (OUT's staging directory) rather than a possibly small /tmp."""
    name = getattr(dest, "name", None)
    if isinstance(name, str) and os.path.isdir(os.path.dirname(os.path.abspath(name))):
        return os.path.dirname(os.path.abspath(name))
    return None


def _write_image_member(dest: BinaryIO, image: Path) -> Member:
    size = image.stat().st_size
    if size > MAX_FILE_SIZE:
        raise NetbuildError(f"the squashfs image is {size} bytes, and a cpio archive cannot hold a file of 4 GiB "
                            "or more (nor would the kernel load such an initrd)")

    def fill(cpio: CpioWriter) -> None:
        cpio.regular(IMAGE_NAME, IMAGE_MODE, size)
        with open(image, "rb") as f:
            while chunk := f.read(CHUNK):
                cpio.data(chunk)

    return write_member(dest, "squashfs", Compression("none", None), 1, fill)


def write_stage1_members(dest: BinaryIO, plan: BootPlan, stage1: ToplevelStage1 | BuiltinStage1,
                         report: Reporter) -> list[Member]:
    """The stage 1 at dest's position: the toplevel's copied, or the built-in one as one member."""
    if isinstance(stage1, ToplevelStage1):
        report.log(f"stage 1: the toplevel's own initrd {stage1.store_path} ({len(stage1.members)} archives), as is")
        return copy_toplevel_stage1(dest, stage1)
    names = ", ".join(m.name for m in stage1.modules) or "none (built in)"
    lacking = f" (not in the tree, so unavailable: {', '.join(stage1.lacking)})" if stage1.lacking else ""
    report.log(f"stage 1: netbuild's built-in ({plan.compression}), BusyBox {stage1.busybox_origin}, "
               f"modules {names} from {stage1.modules_origin}{lacking}")
    builtin = stage1

    def fill(cpio: CpioWriter) -> None:
        write_stage1(cpio, busybox=builtin.busybox, modules=builtin.modules, release=builtin.release,
                     layout=plan.recipe.layout)

    return [write_member(dest, "stage1", plan.compression, plan.jobs, fill)]


def _write(dest: BinaryIO, plan: BootPlan, prepared: Prepared, report: Reporter) -> InitrdResult:
    members = write_stage1_members(dest, plan, prepared.stage1, report)
    dest.write(b"\0" * (-dest.tell() % 4))  # a plain archive must start 4-aligned; the kernel skips NULs

    report.log(f"squashfs: {len(plan.closure)} store paths ({prepared.squashfs})")
    with tempfile.TemporaryDirectory(prefix=".squashfs-", dir=_image_dir(dest)) as tmp:
        image = Path(tmp) / IMAGE_NAME
        made = write_image(image, closure=plan.closure, store=plan.store, compression=prepared.squashfs,
                           jobs=plan.jobs, report=report)
        report.log(f"squashfs: {image.stat().st_size} bytes in {made.seconds:.1f} s")
        members.append(_write_image_member(dest, image))
    return InitrdResult(verified=made.verified, members=members, registration=made.registration)


class SquashfsLayout(Layout[Prepared]):
    name = "squashfs"

    def prepare(self, plan: BootPlan) -> Prepared:
        return _prepare(plan)

    def write(self, dest: BinaryIO, plan: BootPlan, prepared: Prepared, report: Reporter = QUIET) -> InitrdResult:
        return _write(dest, plan, prepared, report)

    def write_checked(self, path: Path, plan: BootPlan, prepared: Prepared,
                      report: Reporter = QUIET) -> tuple[InitrdResult, Digest]:
        """Written whole, then read back whole: every member decompressed and parsed again (no digest
        was recorded as they were made: a stage 1 copied or compressed in one stream, an image that
        mksquashfs made)."""
        return write_then_read_back(self, path, plan, prepared, report)

    def rootfs_bytes(self, plan: BootPlan, initrd: InitrdResult) -> int:
        """What the kernel unpacks into its tmpfs root: the stage 1's files and nix-store.squashfs, the
        image being almost all of it (the archives' own headers count too, a few hundred bytes)."""
        return pages(initrd.plain_size)


SQUASHFS = SquashfsLayout()
