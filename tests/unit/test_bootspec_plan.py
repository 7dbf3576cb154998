"""The plan from a toplevel's boot.json: kernel, init, kernel parameters and stage 1 come from there
(not the symlinks beside it), --kernel and --init still win, --specialisation picks a child, the menu
offers them all, and every path of the document must be in the closure — on a hand-made store
under --store-root, with Debian's real kernel."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from builder.bootspec import BOOTSPEC_V1, SPECIALISATION_V1
from builder.closure import Closure, StorePath
from builder.errors import NetbuildError
from builder.formats.cpio import CpioWriter
from builder.layouts.squashfs import SQUASHFS as squashfs
from builder.plan import BootPlan, Options, make_plan
from builder.recipe import load_recipe
from builder.stage1.toplevel import ToplevelStage1
from builder.writers.menu import netboot_scripts

STORE = "/nix/store"
TOP = f"{STORE}/{'a' * 32}-nixos-system-test"
FAST = f"{STORE}/{'b' * 32}-nixos-system-test-fast"
LINUX = f"{STORE}/{'c' * 32}-linux-6.1"
STAGE1 = f"{STORE}/{'d' * 32}-initrd-linux-6.1"
OTHER_LINUX = f"{STORE}/{'f' * 32}-linux-6.6"
OUTSIDE = f"{STORE}/{'g' * 32}-not-in-the-closure"
FILE = f"{TOP}/boot.json"
PARAMS = ["console=ttyS0", "quiet"]
INIT = load_recipe("netboot").init_parameter  # rdinit or init: the recipe's business, not this test's


@pytest.fixture(scope="module")
def kernel_bytes() -> bytes:
    return sorted(Path("/boot").glob("vmlinuz-*"))[-1].read_bytes()  # make install puts Debian's kernel there


def v1(toplevel: str, params: list[str], **extra: Any) -> dict[str, Any]:
    return {"init": f"{toplevel}/init", "initrd": f"{STAGE1}/initrd", "kernel": f"{LINUX}/bzImage",
            "kernelParams": params, "label": "Test system (Linux 6.1)", "system": "x86_64-linux",
            "toplevel": toplevel, **extra}


def stage1_archive() -> bytes:
    out = io.BytesIO()
    cpio = CpioWriter(out.write)
    cpio.file("init", 0o755, b"#!/bin/sh\n")
    cpio.trailer()
    return out.getvalue()


@dataclass
class System:
    """A NixOS-shaped toplevel with one specialisation, `fast`, written under root/nix/store."""

    root: Path
    kernel_bytes: bytes
    main: dict[str, Any] = field(default_factory=lambda: v1(TOP, PARAMS))
    fast: dict[str, Any] = field(default_factory=lambda: v1(FAST, [*PARAMS, "netbuild.spec=fast"]))
    with_bootspec: bool = True
    written: bool = False

    def disk(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def closure(self) -> Closure:
        """The store's closure (everything but OUTSIDE), written under root the first time."""
        if not self.written:
            self._write()
            self.written = True
        refs = {TOP: (FAST, LINUX, OTHER_LINUX, STAGE1), FAST: (LINUX, STAGE1)}
        paths = [TOP, FAST, LINUX, OTHER_LINUX, STAGE1]
        return Closure([StorePath(p, None, None, refs.get(p, ())) for p in paths], source="closure.json")

    def _write(self) -> None:
        for path, contents in {
            f"{LINUX}/bzImage": self.kernel_bytes,
            f"{OTHER_LINUX}/bzImage": self.kernel_bytes,
            f"{STAGE1}/initrd": stage1_archive(),
            f"{STAGE1}/other-initrd": stage1_archive() + b"\0" * 512,
            f"{FAST}/init": b"#!/bin/sh\n",
            f"{FAST}/kernel-params": b"from the child's file\n",
            f"{TOP}/init": b"#!/bin/sh\n",
            f"{TOP}/kernel-params": b"from the file\n",
        }.items():
            self.disk(path).parent.mkdir(parents=True, exist_ok=True)
            self.disk(path).write_bytes(contents)
        # The symlinks NixOS puts beside boot.json lead elsewhere here, to show which one the plan reads.
        self.disk(f"{TOP}/kernel").symlink_to(f"{OTHER_LINUX}/bzImage")
        self.disk(f"{TOP}/initrd").symlink_to(f"{STAGE1}/other-initrd")
        (self.disk(TOP) / "specialisation").mkdir()
        (self.disk(TOP) / "specialisation" / "fast").symlink_to(FAST)
        if self.with_bootspec:
            child = {BOOTSPEC_V1: self.fast, SPECIALISATION_V1: {}}
            doc = {BOOTSPEC_V1: self.main, SPECIALISATION_V1: {"fast": child}}
            self.disk(FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))

    def plan(self, recipe: str = "netboot", **options: Any) -> BootPlan:
        return make_plan(self.closure(), load_recipe(recipe), Options(store_root=self.root, **options))


@pytest.fixture
def system(tmp_path: Path, kernel_bytes: bytes) -> System:
    return System(tmp_path, kernel_bytes)


def refused(system: System, **options: Any) -> str:
    with pytest.raises(NetbuildError) as err:
        system.plan(**options)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_the_choices_come_from_boot_json_not_the_symlinks(system: System) -> None:
    plan = system.plan()
    assert plan.kernel.origin == f"{LINUX}/bzImage"  # not OTHER_LINUX, where <toplevel>/kernel leads
    assert plan.init == f"{TOP}/init"
    assert plan.cmdline == f"{INIT}={TOP}/init console=ttyS0 quiet"  # not the kernel-params file's words
    assert plan.system_initrd == f"{STAGE1}/initrd"  # not <toplevel>/initrd
    assert plan.bootspec is not None
    assert (plan.bootspec.file, plan.bootspec.specialisation) == (FILE, None)
    assert (plan.bootspec.kernel, plan.bootspec.init, plan.bootspec.kernel_params, plan.bootspec.initrd) == (
        '."org.nixos.bootspec.v1".kernel', '."org.nixos.bootspec.v1".init', '."org.nixos.bootspec.v1".kernelParams',
        '."org.nixos.bootspec.v1".initrd')


def test_without_boot_json_the_symlinks_as_ever(tmp_path: Path, kernel_bytes: bytes) -> None:
    plan = System(tmp_path, kernel_bytes, with_bootspec=False).plan()
    assert plan.kernel.origin == f"{OTHER_LINUX}/bzImage"
    assert plan.cmdline == f"{INIT}={TOP}/init from the file"
    assert (plan.system_initrd, plan.bootspec, plan.menu) == (f"{TOP}/initrd", None, None)
    with pytest.raises(NetbuildError, match=rf"^--specialisation fast: {TOP} has no boot.json, so no "):
        System(tmp_path / "again", kernel_bytes, with_bootspec=False).plan(specialisation="fast")


def test_read_bootspec_off_takes_the_symlinks(system: System) -> None:
    plan = system.plan(read_bootspec=False)
    assert (plan.kernel.origin, plan.bootspec, plan.menu) == (f"{OTHER_LINUX}/bzImage", None, None)


def test_no_initrd_in_boot_json_means_no_stage_1(system: System) -> None:
    del system.main["initrd"]
    plan = system.plan()
    assert plan.system_initrd is None and plan.bootspec is not None and plan.bootspec.initrd is None


def test_the_menu_offers_the_system_and_its_specialisations(system: System) -> None:
    plan = system.plan(append="console=tty0")
    assert plan.menu is not None
    assert (plan.menu.timeout_s, plan.menu.title) == (5, "Test system (Linux 6.1)")
    assert [(e.name, e.toplevel, e.init, e.cmdline) for e in plan.menu.entries] == [
        ("main", TOP, f"{TOP}/init", f"{INIT}={TOP}/init console=ttyS0 quiet console=tty0"),
        ("fast", FAST, f"{FAST}/init", f"{INIT}={FAST}/init console=ttyS0 quiet netbuild.spec=fast console=tty0"),
    ]
    assert plan.menu.entries[0].cmdline == plan.cmdline  # kernel-params keeps the main system's line
    assert system.plan(menu_timeout_s=12).menu.timeout_s == 12  # type: ignore[union-attr]
    assert system.plan(menu_timeout_s=0).menu is None


def test_specialisation_builds_that_child(system: System) -> None:
    plan = system.plan(specialisation="fast")
    assert plan.cmdline == f"{INIT}={FAST}/init console=ttyS0 quiet netbuild.spec=fast"
    assert (plan.init, plan.menu, plan.toplevel) == (f"{FAST}/init", None, TOP)
    assert plan.bootspec is not None and plan.bootspec.specialisation == "fast"
    assert plan.bootspec.kernel_params == '."org.nixos.specialisation.v1".fast."org.nixos.bootspec.v1".kernelParams'
    assert refused(system, specialisation="slow") == (
        f"--specialisation slow: {FILE} has no specialisation of that name (it has: fast)")


def test_kernel_and_init_options_still_win(system: System, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(system.kernel_bytes)
    system.fast["kernel"] = f"{OTHER_LINUX}/bzImage"  # --kernel boots every entry: no second kernel to refuse
    plan = system.plan(kernel=kernel, init=f"{TOP}/init")
    assert (plan.kernel.origin, plan.init) == ("--kernel", f"{TOP}/init")
    assert plan.bootspec is not None and (plan.bootspec.kernel, plan.bootspec.init) == ("--kernel", "--init")
    assert plan.menu is not None
    assert [e.cmdline for e in plan.menu.entries] == [f"{INIT}={TOP}/init console=ttyS0 quiet",
                                                     f"{INIT}={TOP}/init console=ttyS0 quiet netbuild.spec=fast"]


def test_a_specialisation_with_another_kernel_is_refused_in_the_menu(system: System) -> None:
    system.fast["kernel"] = f"{OTHER_LINUX}/bzImage"
    assert refused(system) == (
        f"{FILE}: specialisation 'fast' boots the kernel {OTHER_LINUX}/bzImage, not the main system's "
        f"{LINUX}/bzImage, and netboot.ipxe's entries share one bzImage: build it into an OUT of its own with "
        "--specialisation fast (`netbuild menu` offers several OUTs), or build without the menu (--menu-timeout 0)")


def test_a_specialisation_with_another_kernel_builds_on_its_own(tmp_path: Path, kernel_bytes: bytes) -> None:
    system = System(tmp_path, kernel_bytes)
    system.fast["kernel"] = f"{OTHER_LINUX}/bzImage"
    assert system.plan(specialisation="fast").kernel.origin == f"{OTHER_LINUX}/bzImage"
    system = System(tmp_path / "again", kernel_bytes)
    system.fast["kernel"] = f"{OTHER_LINUX}/bzImage"
    assert system.plan(menu_timeout_s=0).kernel.origin == f"{LINUX}/bzImage"


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        ("main", "kernel", f"{OUTSIDE}/bzImage",
         f'{FILE}: field ."org.nixos.bootspec.v1".kernel {OUTSIDE}/bzImage belongs to {OUTSIDE}, which is not in '
         "the closure"),
        ("main", "init", f"{OUTSIDE}/init",
         f'{FILE}: field ."org.nixos.bootspec.v1".init {OUTSIDE}/init belongs to {OUTSIDE}, which is not in the '
         "closure"),
        ("main", "toplevel", OUTSIDE,
         f'{FILE}: field ."org.nixos.bootspec.v1".toplevel {OUTSIDE} belongs to {OUTSIDE}, which is not in the '
         "closure"),
        ("main", "kernel", "/boot/vmlinuz",
         f'{FILE}: field ."org.nixos.bootspec.v1".kernel /boot/vmlinuz is not inside /nix/store'),
        ("main", "kernel", f"{LINUX}/missing",
         f'{FILE}: field ."org.nixos.bootspec.v1".kernel: {LINUX}/missing does not exist (while resolving '
         f"{LINUX}/missing)"),
        # A specialisation that is not booted is checked all the same: the document lies about the closure.
        ("fast", "initrd", f"{OUTSIDE}/initrd",
         f'{FILE}: field ."org.nixos.specialisation.v1".fast."org.nixos.bootspec.v1".initrd {OUTSIDE}/initrd '
         f"belongs to {OUTSIDE}, which is not in the closure"),
    ],
)
def test_a_field_outside_the_closure_is_refused_by_name(
    system: System, where: str, key: str, value: str, message: str
) -> None:
    (system.main if where == "main" else system.fast)[key] = value
    assert refused(system) == message


def test_a_symlink_in_a_field_must_stay_in_the_closure(system: System) -> None:
    system.main["kernel"] = f"{TOP}/kernel-link"
    system.disk(OUTSIDE).mkdir(parents=True)  # in the store on disk, but not in the closure
    system.disk(f"{OUTSIDE}/bzImage").write_bytes(system.kernel_bytes)
    system.disk(TOP).mkdir(parents=True)
    system.disk(f"{TOP}/kernel-link").symlink_to(f"{OUTSIDE}/bzImage")
    assert refused(system) == (f'{FILE}: field ."org.nixos.bootspec.v1".kernel {TOP}/kernel-link belongs to '
                               f"{OUTSIDE}, which is not in the closure (it leads to {OUTSIDE}/bzImage)")


def test_a_malformed_boot_json_is_one_line(system: System) -> None:
    system.closure()
    system.disk(FILE).write_text('{"org.nixos.bootspec.v1": {"kernel": 1}}')
    assert refused(system) == f'{FILE}: field ."org.nixos.bootspec.v1".kernelParams is missing'
    system.disk(FILE).write_text('{"org.nixos.bootspec.v1": ')
    assert refused(system).startswith(f"{FILE}: not valid JSON (")


@pytest.mark.parametrize(("name", "why"), [
    ("main", "is the menu's name for the main system"),
    ("a b", "cannot be an iPXE menu entry"),
])
def test_a_specialisation_the_menu_cannot_name_is_refused(system: System, name: str, why: str) -> None:
    system.closure()
    doc = json.loads(system.disk(FILE).read_text())
    doc[SPECIALISATION_V1] = {name: doc[SPECIALISATION_V1]["fast"]}
    system.disk(FILE).write_text(json.dumps(doc))
    with pytest.raises(NetbuildError) as err:
        system.plan()
    assert str(err.value).startswith(f"{FILE}: the specialisation name {name!r} {why}")
    assert system.plan(menu_timeout_s=0).menu is None


def test_the_squashfs_stage_1_is_boot_json_s_initrd(system: System) -> None:
    if shutil.which("mksquashfs") is None:
        pytest.fail("squashfs-tools is not installed (make install installs it)")
    prepared = squashfs.prepare(system.plan("netboot-squashfs"))
    assert isinstance(prepared.stage1, ToplevelStage1)
    assert prepared.stage1.store_path == f"{STAGE1}/initrd"  # not other-initrd, where <toplevel>/initrd leads


def test_the_menu_needs_one_stage_1_for_all(tmp_path: Path, kernel_bytes: bytes) -> None:
    if shutil.which("mksquashfs") is None:
        pytest.fail("squashfs-tools is not installed (make install installs it)")
    system = System(tmp_path, kernel_bytes)
    system.fast["initrd"] = f"{STAGE1}/other-initrd"
    plan = system.plan("netboot-squashfs")
    with pytest.raises(NetbuildError) as err:
        squashfs.prepare(plan)
    assert str(err.value) == (
        f"specialisation 'fast' has the stage 1 {STAGE1}/other-initrd, not the main system's {STAGE1}/initrd, and "
        "netboot.ipxe's entries share one initrd: build it into an OUT of its own with --specialisation fast, or "
        "build without the menu (--menu-timeout 0)")
    assert squashfs.prepare(System(tmp_path / "alone", kernel_bytes, fast=system.fast)
                            .plan("netboot-squashfs", specialisation="fast")).stage1.store_path == (  # type: ignore
        f"{STAGE1}/other-initrd")


def test_the_scripts_of_a_plan_with_a_menu(system: System) -> None:
    plan = system.plan(base_url="http://10.0.0.1/img")
    scripts = netboot_scripts(cmdline=plan.cmdline, base_url=plan.base_url, toplevel=plan.toplevel,
                              description="d", menu=plan.menu)
    assert sorted(scripts) == ["netboot-fast.ipxe", "netboot-main.ipxe", "netboot.ipxe"]
    menu = scripts["netboot.ipxe"].decode()
    assert "chain http://10.0.0.1/img/netboot-fast.ipxe || goto netbuild-failed\n" in menu
    fast = scripts["netboot-fast.ipxe"].decode()
    assert (f"\nkernel http://10.0.0.1/img/bzImage initrd=initrd {INIT}={FAST}/init console=ttyS0 quiet "
            "netbuild.spec=fast ${cmdline}\ninitrd http://10.0.0.1/img/initrd\nboot\n") in fast
    # The main system's script is what netboot.ipxe is without the menu.
    alone = netboot_scripts(cmdline=plan.cmdline, base_url=plan.base_url, toplevel=plan.toplevel, description="d",
                            menu=None)
    assert alone == {"netboot.ipxe": scripts["netboot-main.ipxe"]}
