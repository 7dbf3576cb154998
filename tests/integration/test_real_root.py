"""A real root in every layout: on the booted machine, what the Nix sandbox, podman, bubblewrap and
systemd-nspawn do first — `unshare -m`, then pivot_root into a new root — works. The init of
tests/fixtures/realroot.nix tries it and says what happened.

In the whole-store layout the kernel unpacks the initramfs into rootfs, where pivot_root fails with
EINVAL (nix-netboot-serve's bug #26); netbuild's /init (builder/preinit) runs init on a bind mount
of it instead. The squashfs layout's stage 1 switches to a root of its own anyway.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunNetbuild
from support.qemu import boot, kernel_release
from support.squashfs import FixtureClosure, program_closure

pytestmark = [pytest.mark.nix, pytest.mark.boot]

PARAMS = ["--append", "console=ttyS0 panic=-1 loglevel=4"]
PIVOTED = "NETBUILD-PIVOT-OK pivoted"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    return program_closure("realroot.nix", tmp_path_factory.mktemp("realroot"))


def build(run_netbuild: RunNetbuild, probe: FixtureClosure, kernel: Path, out: Path, *extra: str) -> Path:
    run_netbuild(str(probe.closure_json), "-o", str(out), "--kernel", str(kernel), "--init", probe.root,
                 *PARAMS, *extra)
    return out


def boot_out(out: Path, params: str | None = None) -> str:
    append = params if params is not None else (out / "kernel-params").read_text().strip()
    return boot(out / "bzImage", out / "initrd", append)


def test_pivot_root_works_in_the_whole_store_layout(
    probe: FixtureClosure, kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    out = build(run_netbuild, probe, kernel_image, tmp_path / "out")
    assert (out / "kernel-params").read_text().startswith(f"init={probe.root} ")
    console = boot_out(out)
    assert PIVOTED in console, console[-3000:]
    # init's root is a mount of the initramfs's own file system (not a copy): rootfs, bound on /
    (root_line,) = [line for line in console.splitlines() if line.startswith("NETBUILD-ROOT ")]
    assert " / / " in root_line and " - rootfs rootfs " in root_line, root_line


def test_pivot_root_works_when_the_boot_loader_drops_the_command_line(
    probe: FixtureClosure, kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    """No init= at all: the kernel runs /init, which runs the init it was built with."""
    out = build(run_netbuild, probe, kernel_image, tmp_path / "out")
    console = boot_out(out, "console=ttyS0 panic=-1 loglevel=4")
    assert PIVOTED in console, console[-3000:]


def test_pivot_root_works_in_the_squashfs_layout(
    probe: FixtureClosure, kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    modules = Path("/lib/modules") / kernel_release(kernel_image)
    out = build(run_netbuild, probe, kernel_image, tmp_path / "out", "--recipe", "netboot-squashfs",
                "--modules", str(modules))
    console = boot_out(out)
    assert PIVOTED in console, console[-3000:]
