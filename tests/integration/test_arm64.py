"""arm64 (aarch64) closures, packed on this x86-64 host: Debian's real arm64 kernel, its modules and
its static BusyBox (tests/support/arm64.py fetches them with `dpkg --add-architecture arm64` and
`apt-get download`, and takes the architecture away again) in a fixture system built by real Nix,
booted by qemu-system-aarch64 -M virt under TCG:

- directly (-kernel Image -initrd initrd), by AAVMF's own UEFI HTTP Boot of netboot.efi (the arm64
  UKI), and by U-Boot over TFTP (boot.scr.uimg → `pxe get`/`pxe boot` → pxelinux.cfg/default), in
  the whole-store and the squashfs layouts, each time with the guest's store digest equal to the
  host's (the whole-store /init is preinit/aarch64.S; the squashfs stage 1 runs the arm64 BusyBox
  and loads the arm64 modules); and run-qemu boots OUT with qemu-system-aarch64 by itself;
- OUT has `Image` (not bzImage), pxelinux.cfg/default and boot.scr.uimg, which mkimage reads;
- the preflight refuses an arm64 closure with an x86 init, an x86 closure with an arm64 init, a
  toplevel whose `system` names another architecture, and an x86 stub or BusyBox for an arm64
  kernel, each in one `error:` line naming the file and both architectures;
- `--dtb NAME` ships the kernel's device tree and names it on pxelinux.cfg's FDT line, and is
  refused, saying what there is, when the name is not among the kernel's dtbs;
- an Image.gz kernel is unpacked: OUT/Image is the Image;
- a real root on arm64: the init of tests/fixtures/realroot.nix (arm64 BusyBox) runs `unshare -m` and
  pivot_root, in the whole-store layout (from aarch64.S's bind mount of rootfs, with init= and, the
  boot loader having dropped the command line, with the default init) and in the squashfs layout.
"""

from __future__ import annotations

import gzip
import json
import os
import selectors
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RunNetbuild, SystemClosure
from support.arm64 import Arm64Packages, arm64_packages, arm64_system
from support.netboot import MARKER, assert_guest_store, netbuild_boot, plain_text
from support.nixstore import FIXTURES, nix_build, nix_path_literal
from support.squashfs import RECIPE, FixtureClosure, fixture_closure

from builder.formats.uimage import read_script
from builder.writers.uboot_script import RUNNING

pytestmark = [pytest.mark.boot, pytest.mark.nix]

OVERLAY_OK = "NETBUILD-OVERLAY-OK"
VIAS = ("direct", "uefi-http", "uboot")
LAYOUTS = ("whole-store", "squashfs")
RUN_QEMU_TIMEOUT_S = 120


def _foreign_architectures() -> list[str]:
    return subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.fixture(scope="module")
def packages() -> Arm64Packages:
    """Fetched (or taken from .tmp/), and the machine left as it was: the same foreign architectures
    and, unless arm64 was one before, no arm64 package lists."""
    before = _foreign_architectures()
    fetched = arm64_packages()
    assert _foreign_architectures() == before
    if "arm64" not in before:
        assert not list(Path("/var/lib/apt/lists").glob("*binary-arm64_Packages*"))
    assert fetched.kernel.is_file() and fetched.busybox.is_file() and fetched.efi_stub.is_file()
    return fetched


@pytest.fixture(scope="module")
def whole_system(packages: Arm64Packages, tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    return arm64_system(packages, tmp_path_factory.mktemp("arm64-whole"))


@pytest.fixture(scope="module")
def squashfs_system(packages: Arm64Packages, tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    """With kernel-modules (the built-in stage 1 loads loop, squashfs, overlay) and the overlay check."""
    return arm64_system(packages, tmp_path_factory.mktemp("arm64-squashfs"), withModules=True, overlayCheck=True)


@pytest.fixture(scope="module")
def outs(whole_system: FixtureClosure, squashfs_system: FixtureClosure, packages: Arm64Packages,
         run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Layout → OUT, each with netboot.efi made from Debian's arm64 systemd-stub."""
    built = {}
    for layout, system, recipe in (("whole-store", whole_system, []), ("squashfs", squashfs_system,
                                                                       ["--recipe", RECIPE])):
        out = tmp_path_factory.mktemp(f"arm64-{layout}") / "out"
        run_netbuild(str(system.closure_json), "-o", str(out), *recipe, "--uki", "--efi-stub", str(packages.efi_stub))
        built[layout] = out
    return built


def _system(layout: str, whole: FixtureClosure, squashfs: FixtureClosure) -> FixtureClosure:
    return whole if layout == "whole-store" else squashfs


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_boots_with_exactly_the_closure(layout: str, via: str, outs: dict[str, Path], whole_system: FixtureClosure,
                                        squashfs_system: FixtureClosure) -> None:
    out = outs[layout]
    expect = MARKER if layout == "whole-store" else OVERLAY_OK
    run = netbuild_boot(out, "--via", via, "--expect", expect)
    assert run.returncode == 0, run.explain()
    assert "qemu-system-aarch64 -accel tcg -machine virt -cpu max,pauth-impdef=on" in run.stderr
    firmware = {"direct": "-kernel", "uefi-http": "/AAVMF_CODE.fd", "uboot": "/qemu_arm64/u-boot.bin"}[via]
    assert firmware in run.stderr, run.stderr  # booted the way it says, not directly each time
    if via == "uboot":  # U-Boot ran the script and read the configuration over TFTP
        assert RUNNING in run.console and "Retrieving file: pxelinux.cfg/default" in run.console
    if via == "uefi-http":
        assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" in run.console
    if layout == "squashfs":
        assert "netbuild stage 1: the store is mounted" in run.console
    system = _system(layout, whole_system, squashfs_system)
    assert_guest_store(run.console, system.paths, (out / "registration").read_bytes())


def test_out_holds_the_arm64_files(outs: dict[str, Path], packages: Arm64Packages, whole_system: FixtureClosure,
                                   run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    out = outs["whole-store"]
    assert not (out / "bzImage").exists()
    assert (out / "Image").read_bytes() == _plain(packages.kernel)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["kernel"]["arch"] == "aarch64"
    assert manifest["inputs"]["kernel"]["version"].startswith(packages.release + " ")
    assert {"Image", "pxelinux.cfg/default", "boot.scr.uimg"} <= set(manifest["artifacts"])
    params = (out / "kernel-params").read_text().strip()
    assert [line.strip() for line in (out / "pxelinux.cfg" / "default").read_text().splitlines()
            if line.strip().startswith(("KERNEL", "INITRD", "APPEND", "FDT", "DEFAULT"))] == [
        "DEFAULT netbuild", "KERNEL Image", "INITRD initrd", f"APPEND {params}"]
    # mkimage, U-Boot's own tool, reads the script image back; its script runs pxe.
    listed = subprocess.run(["mkimage", "-l", str(out / "boot.scr.uimg")], capture_output=True, text=True, check=True)
    assert "AArch64 Linux Script (uncompressed)" in listed.stdout, listed.stdout
    assert b"pxe get && pxe boot" in read_script((out / "boot.scr.uimg").read_bytes())[1]
    # The sums cover the file in pxelinux.cfg/, as sha256sum -c reads them.
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, check=True)
    checked = run_netbuild("check", str(out))
    assert b"ok:" in checked.stdout
    assert "qemu-system-aarch64" in (out / "run-qemu").read_text()
    # What is x86's alone says so: iPXE's boot paths and netbuild iso.
    tftp = netbuild_boot(out, "--via", "tftp", timeout=30)
    assert tftp.returncode != 0 and "which Debian has for x86 only" in tftp.stderr, tftp.explain()
    iso = run_netbuild("iso", str(out), "-o", str(tmp_path / "x.iso"), check=False)
    assert iso.returncode != 0 and b"netbuild iso makes x86-64 discs only" in iso.stderr


def test_run_qemu_boots_the_arm64_out(outs: dict[str, Path], whole_system: FixtureClosure) -> None:
    out = outs["whole-store"]
    proc = subprocess.Popen([str(out / "run-qemu")], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "QEMU_ACCEL": "tcg"})
    assert proc.stdout is not None
    output = bytearray()
    deadline = time.monotonic() + RUN_QEMU_TIMEOUT_S
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline and proc.poll() is None:
                if sel.select(timeout=1):
                    output += os.read(proc.stdout.fileno(), 65536)
            output += proc.stdout.read() if proc.poll() is not None else b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    console = plain_text(bytes(output))
    assert f"\n{MARKER}" in console, console[-3000:]
    assert_guest_store(console, whole_system.paths, (out / "registration").read_bytes())


def _plain(kernel: Path) -> bytes:
    """The Image: Debian 12's arm64 vmlinuz is one; were a release's gzipped, netbuild ships it unpacked."""
    data = kernel.read_bytes()
    return gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data


def _refused(run_netbuild: RunNetbuild, closure: Path, out: Path, *args: str) -> str:
    proc = run_netbuild(str(closure), "-o", str(out), *args, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and not out.exists()
    return stderr


def test_mixed_architectures_are_refused(packages: Arm64Packages, kernel_image: Path, run_netbuild: RunNetbuild,
                                         tmp_path: Path) -> None:
    # An arm64 kernel with an x86 BusyBox as init's interpreter.
    x86_init = arm64_system(packages, tmp_path / "x86-init", busybox=Path("/bin/busybox"))
    stderr = _refused(run_netbuild, x86_init.closure_json, tmp_path / "out")
    sh = f"{x86_init.path_named('-busybox')}/bin/sh"
    assert f"→ {sh}: an ELF program for x86_64 (EM_X86_64), but the kernel " in stderr
    assert "/Image is an aarch64 kernel" in stderr
    # The reverse: this machine's x86 kernel with the arm64 BusyBox.
    arm_init = arm64_system(packages, tmp_path / "arm-init", kernel=kernel_image, guest_system="x86_64-linux",
                            console="ttyS0")
    stderr = _refused(run_netbuild, arm_init.closure_json, tmp_path / "out")
    assert "an ELF program for aarch64 (EM_AARCH64), but the kernel " in stderr and "is an x86_64 kernel" in stderr
    # Both parts arm64, but the toplevel says it is an x86 system.
    says_x86 = arm64_system(packages, tmp_path / "says-x86", guest_system="x86_64-linux")
    stderr = _refused(run_netbuild, says_x86.closure_json, tmp_path / "out")
    assert stderr.startswith(f"error: {says_x86.root}/system says x86_64-linux (x86_64), but the kernel ")
    assert "is an aarch64 kernel (aarch64-linux)" in stderr


def test_x86_parts_for_an_arm64_kernel_are_refused(squashfs_system: FixtureClosure, run_netbuild: RunNetbuild,
                                                   tmp_path: Path) -> None:
    stderr = _refused(run_netbuild, squashfs_system.closure_json, tmp_path / "out", "--recipe", RECIPE,
                      "--busybox", "/bin/busybox")
    assert ("--busybox /bin/busybox: the stage 1 needs a static aarch64 BusyBox, but it is built for x86_64 "
            "(EM_X86_64), not for the kernel's aarch64") in stderr
    x86_stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    stderr = _refused(run_netbuild, squashfs_system.closure_json, tmp_path / "out", "--uki", "--efi-stub", x86_stub)
    assert "systemd-stub --efi-stub is a UEFI program for x86_64, but the kernel is aarch64's" in stderr


def test_dtb_names_the_kernels_device_tree(packages: Arm64Packages, whole_system: FixtureClosure,
                                          system_closure: SystemClosure, run_netbuild: RunNetbuild,
                                          tmp_path: Path) -> None:
    # Two of the Debian kernel's own device trees, as nixpkgs ships them: <kernel>/dtbs/<vendor>/.
    dtbs = tmp_path / "dtbs"
    (dtbs / "arm").mkdir(parents=True)
    for name in ("juno.dtb", "foundation-v8.dtb"):
        shutil.copyfile(packages.dtbs / "arm" / name, dtbs / "arm" / name)
    system = arm64_system(packages, tmp_path / "with-dtbs", dtbs=dtbs)
    out = tmp_path / "out"
    run_netbuild(str(system.closure_json), "-o", str(out), "--dtb", "arm/juno.dtb")
    assert (out / "devicetree.dtb").read_bytes() == (packages.dtbs / "arm" / "juno.dtb").read_bytes()
    config = (out / "pxelinux.cfg" / "default").read_text().splitlines()
    assert config[-1] == "  FDT devicetree.dtb" and config[-2].startswith("  APPEND ")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["dtb"]["name"] == "arm/juno.dtb"
    assert manifest["settings"]["dtb"]["origin"].endswith("/dtbs/arm/juno.dtb")
    run_netbuild("check", str(out))

    stderr = _refused(run_netbuild, system.closure_json, tmp_path / "nope", "--dtb", "arm/nope.dtb")
    assert "--dtb arm/nope.dtb: not in " in stderr and "(it has: arm/foundation-v8.dtb, arm/juno.dtb)" in stderr
    stderr = _refused(run_netbuild, whole_system.closure_json, tmp_path / "none", "--dtb", "arm/juno.dtb")
    assert "--dtb arm/juno.dtb: the kernel ships no device trees" in stderr
    stderr = _refused(run_netbuild, system_closure.closure_json, tmp_path / "x86", "--dtb", "arm/juno.dtb")
    assert "device trees are for arm64 machines" in stderr and "is an x86_64 kernel" in stderr


def test_an_image_gz_is_shipped_unpacked(packages: Arm64Packages, whole_system: FixtureClosure,
                                         run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    packed = tmp_path / "Image.gz"
    packed.write_bytes(gzip.compress(_plain(packages.kernel), compresslevel=1, mtime=0))
    out = tmp_path / "out"
    run_netbuild(str(whole_system.closure_json), "-o", str(out), "--kernel", str(packed))
    assert (out / "Image").read_bytes() == _plain(packages.kernel)
    assert json.loads((out / "manifest.json").read_text())["inputs"]["kernel"]["origin"] == "--kernel"


PIVOTED = "NETBUILD-PIVOT-OK pivoted"
ARM64_PARAMS = "console=ttyAMA0 panic=-1 loglevel=4"


def test_a_real_root_on_arm64(packages: Arm64Packages, run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    probe = fixture_closure(nix_build(FIXTURES / "realroot.nix", {"busybox": nix_path_literal(packages.busybox)}),
                            tmp_path / "probe")
    common = ["--kernel", str(packages.kernel), "--init", probe.root, "--append", ARM64_PARAMS]
    whole, squashfs = tmp_path / "whole", tmp_path / "squashfs"
    run_netbuild(str(probe.closure_json), "-o", str(whole), *common)
    run_netbuild(str(probe.closure_json), "-o", str(squashfs), *common, "--recipe", RECIPE,
                 "--modules", str(packages.modules_dir / packages.release))
    # The boot loader dropped the command line's init=: the kernel runs /init, which runs its default.
    dropped = tmp_path / "dropped"
    shutil.copytree(whole, dropped)
    (dropped / "kernel-params").write_text(ARM64_PARAMS + "\n")
    for out in (whole, squashfs, dropped):
        run = netbuild_boot(out, "--expect", MARKER)
        assert run.returncode == 0 and PIVOTED in run.console, run.explain()
        if out is not squashfs:  # init's root is a bind mount of rootfs itself, not a copy
            (root_line,) = [line for line in run.console.splitlines() if line.startswith("NETBUILD-ROOT ")]
            assert " / / " in root_line and " - rootfs rootfs " in root_line, root_line
