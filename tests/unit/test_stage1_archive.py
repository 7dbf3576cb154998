"""The built-in stage 1's pieces: its BusyBox (static x86-64, from the closure or --busybox), its
/init rendered from builder/stage1/init.sh, and its cpio entries, read back by netbuild's reader and
by GNU cpio."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from support.qemu import find_kernel, kernel_release

from builder.closure import Closure, StoreFS, StorePath
from builder.errors import NetbuildError
from builder.formats.cpio import CpioWriter, read_archive
from builder.stage1.archive import init_script, write_stage1
from builder.stage1.busybox import busybox_from_closure, busybox_from_file, why_unusable
from builder.stage1.modules import KernelModule, ModulesTree, resolve_modules
from builder.stage1.needs import STAGE1_MODULES

pytestmark = pytest.mark.kernel  # Debian's kernel, its modules and kmod's tools

BUSYBOX = Path("/bin/busybox")
DYNAMIC = Path("/bin/ls")


@pytest.fixture(scope="module")
def release() -> str:
    return kernel_release(find_kernel())


@pytest.fixture(scope="module")
def modules(release: str) -> list[KernelModule]:
    return resolve_modules(ModulesTree("debian", f"/lib/modules/{release}", StoreFS(Path("/"))), STAGE1_MODULES,
                           release)


def test_static_busybox_is_usable_and_others_are_not(tmp_path: Path) -> None:
    assert why_unusable(BUSYBOX) is None
    assert why_unusable(DYNAMIC) is not None and "dynamically linked (interpreter /lib64/ld-linux-x86-64.so.2)" \
        in why_unusable(DYNAMIC)  # type: ignore[operator]
    script = tmp_path / "busybox"
    script.write_text("#!/bin/sh\n")
    assert "not an ELF executable" in (why_unusable(script) or "")
    with pytest.raises(NetbuildError, match=r"^--busybox /bin/ls: the stage 1 needs a static x86_64 BusyBox, but it "
                                            r"is dynamically linked"):
        busybox_from_file(DYNAMIC)
    with pytest.raises(NetbuildError, match=r"does not exist or is not a file"):
        busybox_from_file(tmp_path / "nope")
    assert busybox_from_file(BUSYBOX) == BUSYBOX


def store_path(root: Path, name: str, busybox: Path | None) -> str:
    path = f"/nix/store/{name[0] * 32}-{name}"
    (root / path.lstrip("/") / "bin").mkdir(parents=True)
    if busybox is not None:
        shutil.copy(busybox, root / path.lstrip("/") / "bin" / "busybox")
    return path


def test_busybox_from_the_closure_is_the_first_static_one(tmp_path: Path) -> None:
    dynamic = store_path(tmp_path, "a-dynamic", DYNAMIC)
    static = store_path(tmp_path, "b-busybox", BUSYBOX)
    other = store_path(tmp_path, "c-busybox", BUSYBOX)
    closure = Closure([StorePath(p, None, None, ()) for p in (dynamic, static, other)], source="test")
    found, disk = busybox_from_closure(closure, StoreFS(tmp_path))
    assert found == f"{static}/bin/busybox"
    assert disk == tmp_path / static.lstrip("/") / "bin" / "busybox"


def test_no_static_busybox_in_the_closure(tmp_path: Path) -> None:
    dynamic = store_path(tmp_path, "a-dynamic", DYNAMIC)
    escaping = store_path(tmp_path, "d-link", None)
    outside = store_path(tmp_path, "e-outside", BUSYBOX)  # on disk, but not in the closure
    (tmp_path / escaping.lstrip("/") / "bin" / "busybox").symlink_to(f"{outside}/bin/busybox")
    closure = Closure([StorePath(p, None, None, ()) for p in (dynamic, escaping)], source="test")
    with pytest.raises(NetbuildError) as err:
        busybox_from_closure(closure, StoreFS(tmp_path))
    message = str(err.value)
    assert "no store path of the closure has a static bin/busybox" in message
    assert f"{dynamic}/bin/busybox: it is dynamically linked" in message
    assert f"{escaping}/bin/busybox leads to {outside}/bin/busybox, outside the closure" in message
    assert message.endswith("pass --busybox FILE (e.g. /bin/busybox from Debian's busybox-static)")


def test_init_script_is_valid_sh_with_the_modules_in_order(modules: list[KernelModule], release: str,
                                                           tmp_path: Path) -> None:
    script = init_script(modules, release)
    assert script.startswith(b"#!/bin/busybox sh\n")
    assert b"@modules@" not in script and b"@release@" not in script
    expected = b"for module in " + b" ".join(m.plain_relpath.encode() for m in modules) + b"; do"
    assert expected in script
    assert f'insmod "/lib/modules/{release}/$module"'.encode() in script
    path = tmp_path / "init"
    path.write_bytes(script)
    check = subprocess.run([str(BUSYBOX), "sh", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # With every module built in, the loop is empty and still valid shell.
    path.write_bytes(init_script([], release))
    assert subprocess.run([str(BUSYBOX), "sh", "-n", str(path)]).returncode == 0


def test_module_paths_that_the_script_cannot_carry_are_refused(modules: list[KernelModule], release: str) -> None:
    odd = KernelModule(name="odd", relpath="kernel/odd name;rm.ko", elf=b"", info=modules[0].info)
    with pytest.raises(NetbuildError, match="characters the stage 1 cannot carry"):
        init_script([odd], release)


def test_archive_entries(modules: list[KernelModule], release: str, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    cpio = CpioWriter(buffer.write)
    write_stage1(cpio, busybox=BUSYBOX, modules=modules, release=release)
    cpio.trailer()
    entries = {e.name: e for e in read_archive(io.BytesIO(buffer.getvalue()))}
    names = list(entries)
    for name in names:  # the kernel creates no missing parents
        parent = name.rpartition("/")[0]
        assert not parent or names.index(parent) < names.index(name), name
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and (console.rdevmajor, console.rdevminor) == (5, 1)
    assert entries["bin/busybox"].data == BUSYBOX.read_bytes() and entries["bin/busybox"].mode & 0o777 == 0o555
    assert entries["init"].data == init_script(modules, release) and entries["init"].mode & 0o777 == 0o555
    for module in modules:
        entry = entries[f"lib/modules/{release}/{module.plain_relpath}"]
        assert entry.data == module.elf and entry.mode & 0o777 == 0o444
    assert {(e.uid, e.gid, e.mtime, e.nlink) for e in entries.values()} == {(0, 0, 1, 1)}
    # GNU cpio reads it the same way.
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/console"],
                   input=buffer.getvalue(), cwd=tmp_path, check=True)  # no mknod needed
    assert (tmp_path / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.access(tmp_path / "init", os.X_OK)
