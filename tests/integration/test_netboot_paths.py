"""`netbuild boot` on every path a PXE setup uses — QEMU's -kernel, TFTP and HTTP through iPXE,
SeaBIOS and UEFI — and OUT/run-qemu without netbuild: each time the guest's init must print the
digest of exactly the closure plus the registration. Then the failures `--expect` must report:
a marker that never comes, a timeout, a kernel panic, a QEMU that will not start."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SystemClosure
from support.netboot import (
    BOOT_TIMEOUT_S,
    MARKER,
    assert_guest_store,
    http_log,
    netbuild_boot,
    plain_text,
)

pytestmark = [pytest.mark.boot, pytest.mark.nix]

# name → `netbuild boot` arguments. The --append cases also prove that extra kernel parameters
# reach the kernel through iPXE's ${cmdline} (loglevel=7 makes the kernel print its command line).
PATHS: dict[str, list[str]] = {
    "direct": [],
    "tftp": ["--via", "tftp", "--append", "loglevel=7 netbuild.check=tftp"],
    "http": ["--via", "http"],
    "uefi-direct": ["--uefi"],
    "uefi-tftp": ["--via", "tftp", "--uefi"],
    "uefi-http": ["--via", "http", "--uefi", "--append", "loglevel=7 netbuild.check=uefi-http"],
}


@pytest.mark.parametrize("name", list(PATHS))
def test_boots_to_the_marker_with_the_closure_intact(
    name: str, built_out: Path, system_closure: SystemClosure
) -> None:
    args = PATHS[name]
    run = netbuild_boot(built_out, *args, "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    assert f"netbuild: {MARKER!r} appeared after" in run.stderr
    assert_guest_store(run.console, system_closure.paths, (built_out / "registration").read_bytes())

    # The boot went the way it was asked to.
    uefi = "--uefi" in args
    assert ("EFI stub:" in run.console) == uefi, "the kernel's EFI stub speaks only under UEFI"
    if "tftp" in args:  # iPXE's own report of the first download
        assert re.search(r"tftp://10\.0\.2\.2/\S+\.ipxe\.\.\. ok", run.console), run.explain()
    if "http" in args:
        requests = http_log(run.stderr)
        sizes = {name: (built_out / name).stat().st_size for name in ("netboot.ipxe", "bzImage", "initrd")}
        assert [(path, status, sent) for _, path, status, sent in requests] == [
            (f"/{name}", 200, size) for name, size in sizes.items()
        ], run.stderr
        assert re.search(r"http://10\.0\.2\.2:\d+/netboot\.ipxe\.\.\. ok", run.console), run.explain()
    if "--append" in args:
        check = args[args.index("--append") + 1].split()[-1]
        command_line = re.search(r"Kernel command line: (.*)", run.console)
        assert command_line is not None and check in command_line.group(1).split(), run.explain()
    if "--via" not in args:
        assert "10.0.2.2" not in run.console, "a direct boot does not use the network"


def test_run_qemu_boots_without_netbuild(built_out: Path, system_closure: SystemClosure, tmp_path: Path) -> None:
    """OUT/run-qemu with nothing but bash and QEMU on PATH, from another directory, honouring the
    QEMU_* variables."""
    script = built_out / "run-qemu"
    assert os.access(script, os.X_OK)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "qemu-system-x86_64"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": str(bin_dir),
        "QEMU_ACCEL": "tcg",
        "QEMU_MEMORY": "600",
        "QEMU_CPUS": "2",
        "QEMU_KERNEL_PARAMS": "loglevel=7 netbuild.check=run-qemu",
        # Split at white space, as documented; the kernel prints the SMBIOS names it finds.
        "QEMU_OPTS": "-smbios type=1,manufacturer=NetbuildTest,product=RunQemu",
    }
    relative = os.path.relpath(script, elsewhere)  # a relative path: the script must find its own files
    proc = subprocess.run([relative], cwd=elsewhere, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=BOOT_TIMEOUT_S)
    console = plain_text(proc.stdout)
    assert proc.returncode == 0 and MARKER in console, f"{proc.stderr.decode()}\n{console[-3000:]}"
    assert_guest_store(console, system_closure.paths, (built_out / "registration").read_bytes())

    params = (built_out / "kernel-params").read_text().strip()
    command_line = re.search(r"Kernel command line: (.*)", console)
    assert command_line is not None and command_line.group(1).strip() == f"{params} loglevel=7 netbuild.check=run-qemu"
    assert re.search(r"smp: Brought up 1 node, 2 CPUs", console), console[-3000:]
    memory = re.search(r"Memory: \d+K/(\d+)K available", console)
    assert memory is not None and 0.95 * 600 * 1024 < int(memory.group(1)) <= 600 * 1024
    assert "DMI: NetbuildTest RunQemu," in console


def test_expect_fails_when_the_guest_stops_without_the_marker(built_out: Path) -> None:
    run = netbuild_boot(built_out, "--expect", "NETBUILD-NEVER-PRINTED")
    assert run.returncode == 1, run.explain()
    assert MARKER in run.console  # the guest did boot, and powered off
    error = run.stderr.splitlines()[-1]
    assert error.startswith("error: the guest stopped (QEMU exited) before 'NETBUILD-NEVER-PRINTED' appeared")


def test_expect_fails_on_timeout(built_out: Path) -> None:
    run = netbuild_boot(built_out, "--expect", MARKER, "--timeout", "1")
    assert run.returncode == 1, run.explain()
    assert MARKER not in run.console
    assert run.stderr.splitlines()[-1].startswith(f"error: timed out after 1 s before {MARKER!r} appeared")


@pytest.mark.parametrize("expect", [True, False], ids=["expect", "no-expect"])
def test_a_kernel_panic_is_an_error(expect: bool, built_out: Path) -> None:
    """rdinit=/nonexistent: the kernel finds no init in the initramfs, no root device, and panics."""
    args = ["--append", "rdinit=/nonexistent", *(["--expect", MARKER] if expect else [])]
    run = netbuild_boot(built_out, *args)
    assert run.returncode == 1, run.explain()
    assert "Kernel panic - not syncing" in run.console
    waiting = f" before {MARKER!r} appeared" if expect else ""
    assert run.stderr.splitlines()[-1] == (
        f"error: the kernel panicked{waiting}: VFS: Unable to mount root fs on unknown-block(0,0)"
    ), run.explain()


def test_a_script_that_boots_nothing_is_an_error(tmp_path: Path) -> None:
    """iPXE runs the script, which boots nothing: reported at once, not after the timeout."""
    (tmp_path / "netboot.ipxe").write_text("#!ipxe\necho NETBUILD-TEST giving up\nexit 1\n")
    run = netbuild_boot(tmp_path, "--via", "tftp", "--expect", MARKER)
    assert run.returncode == 1, run.explain()
    assert "NETBUILD-TEST giving up" in run.console  # iPXE did fetch and run it
    assert run.stderr.splitlines()[-1].startswith(
        f"error: nothing booted before {MARKER!r} appeared: the firmware says 'Could not boot image: "), run.explain()


def test_a_failing_qemu_is_an_error(built_out: Path) -> None:
    run = netbuild_boot(built_out, "--expect", MARKER, "--qemu-arg=-no-such-option")
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1] == (
        f"error: QEMU failed (status 1) before {MARKER!r} appeared: qemu-system-x86_64: -no-such-option: "
        "invalid option"
    ), run.explain()


def test_a_directory_without_the_files_is_refused(tmp_path: Path) -> None:
    run = netbuild_boot(tmp_path, "--expect", MARKER)
    assert (run.returncode, run.stderr) == (
        1, f"error: {tmp_path}/bzImage: missing; --via direct boots bzImage, initrd, kernel-params\n")
    run = netbuild_boot(tmp_path, "--via", "http")
    assert (run.returncode, run.stderr) == (
        1, f"error: {tmp_path}/netboot.ipxe: missing; --via http boots this iPXE script (see --script)\n")
