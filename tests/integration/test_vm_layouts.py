"""The VM layouts (--recipe vm-9p, --recipe vm-disk): real Nix builds the fixture system with the
VM-checking init (tests/fixtures/vm-init.sh), netbuild builds OUT, OUT/run-qemu boots it under TCG,
and the guest reports what it saw.

- vm-9p boots Debian's generic kernel (the cloud kernel has no 9p: support/generic_kernel.py); its
  initrd is the built-in stage 1 and the registration, no store path; the guest's store holds the
  closure, byte for byte, from the host's /nix/store over 9p, plus the registration;
- vm-disk boots the fixtures' cloud kernel from OUT/store.img, a reproducible squashfs image; the
  guest's whole store is the closure plus the registration;
- in both /nix/store is writable, and nothing the guest writes reaches the host's store or store.img;
- NIX_DISK_IMAGE keeps what the guest writes under / and /nix/store from one run to the next; without
  it nothing is kept; NETBUILD_SHARES mounts a host directory the guest reads and writes;
- a kernel without 9p is refused at build time naming the options, and a share the kernel cannot
  mount is one console line naming what is missing;
- `netbuild boot` boots both, with netbuild.run=; netbuild.shell gives a shell on the serial console;
- a vm-9p build reads nothing of the closure's files: 64 MiB more closure, no more bytes read.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RunNetbuild
from support.broken import debian_kernel_config
from support.digest import digest_of_lines, explain_mismatch, store_lines
from support.generic_kernel import GenericKernel, generic_kernel
from support.nixstore import FIXTURES, nix_build, path_info
from support.qemu import kernel_release, parse_digest, parse_entries
from support.squashfs import FixtureClosure, SerialConsole, host_modules, system_variant
from support.vmstore import Run, initrd_entry_names, run_qemu

from builder.run.vmstore import store_qemu_args

pytestmark = [pytest.mark.boot, pytest.mark.nix]

REPO = Path(__file__).resolve().parents[2]
PERSIST_PROBE = "/nix/store/netbuild-persist-store"  # vm-init.sh's file under /nix/store that a disk keeps


@pytest.fixture(scope="module")
def generic() -> GenericKernel:
    return generic_kernel()


@pytest.fixture(scope="module")
def system_9p(generic: GenericKernel, tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    return system_variant(generic.vmlinuz, tmp_path_factory.mktemp("system-9p"), vmCheck=True)


@pytest.fixture(scope="module")
def system_disk(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    return system_variant(kernel_image, tmp_path_factory.mktemp("system-disk"), vmCheck=True)


def build_9p(run_netbuild: RunNetbuild, closure: Path, out: Path, generic: GenericKernel, *args: str) -> None:
    run_netbuild(str(closure), "-o", str(out), "--recipe", "vm-9p", "--modules", str(generic.modules),
                 "--kernel-config", str(generic.config), *args)


def disk_options(kernel: Path) -> list[str]:
    return ["--recipe", "vm-disk", "--modules", str(host_modules(kernel)),
            "--kernel-config", str(debian_kernel_config(kernel, kernel_release(kernel)))]


@pytest.fixture(scope="module")
def out_9p(system_9p: FixtureClosure, generic: GenericKernel, run_netbuild: RunNetbuild,
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out-9p") / "out"
    build_9p(run_netbuild, system_9p.closure_json, out, generic)
    return out


@pytest.fixture(scope="module")
def out_disk(system_disk: FixtureClosure, kernel_image: Path, run_netbuild: RunNetbuild,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out-disk") / "out"
    run_netbuild(str(system_disk.closure_json), "-o", str(out), *disk_options(kernel_image))
    return out


def assert_guest_store_is_closure(run: Run, closure: FixtureClosure, out: Path) -> None:
    """The digest the guest printed equals the host's over the closure and the registration."""
    expected = store_lines(closure.paths, (out / "registration").read_bytes())
    if parse_digest(run.console) != digest_of_lines(expected):
        raise AssertionError("the guest's store differs from the closure plus registration:\n"
                             + explain_mismatch(parse_entries(run.console), expected))


def assert_writes_stayed_in_the_guest(run: Run) -> None:
    probe = run.line("NETBUILD-VM-PROBE")  # written and read back in the guest's /nix/store
    assert probe.startswith("/nix/store/netbuild-vm-probe-")
    assert not os.path.lexists(probe), f"the guest's write {probe} reached the host's store"
    assert not os.path.lexists(PERSIST_PROBE)


def manifest(out: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((out / "manifest.json").read_text())
    return doc


# --- vm-9p -------------------------------------------------------------------------------------------


def test_vm_9p_initrd_is_a_stage1_and_the_registration(out_9p: Path, system_9p: FixtureClosure) -> None:
    names = initrd_entry_names(out_9p)
    assert list(names) == ["stage1", "registration"]
    every = [name for entries in names.values() for name in entries]
    assert not [n for n in every if n.startswith(("nix/store", "/nix/store"))], "a store path in the initrd"
    assert "lib/netbuild/store.sh" in names["stage1"] and "init" in names["stage1"]
    assert names["registration"] == ["nix-path-registration"]
    (member,) = [m for m in manifest(out_9p)["initrd"]["members"] if m["role"] == "registration"]  # type: ignore[index]
    assert member["uncompressedSize"] < 4096  # the registration's archive: a few hundred bytes a path
    assert manifest(out_9p)["initrd"]["layout"] == "vm-9p"  # type: ignore[index]
    assert "store.img" not in os.listdir(out_9p)
    params = (out_9p / "kernel-params").read_text().split()
    assert params == [f"init={system_9p.root}/init", *(Path(system_9p.root) / "kernel-params").read_text().split()]


def test_vm_9p_copies_the_toplevels_own_stage1_and_adds_the_registration(
    kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    """stage1 = "auto": a toplevel with an `initrd` (a NixOS system built for qemu-vm.nix mounts the tag
    nix-store itself) gets it byte for byte, then the registration's archive."""
    own = system_variant(kernel_image, tmp_path / "own", withStage1=True)
    out = tmp_path / "out"
    run_netbuild(str(own.closure_json), "-o", str(out), "--recipe", "vm-9p")
    stage1 = (Path(own.root) / "initrd").read_bytes()
    initrd = (out / "initrd").read_bytes()
    assert initrd[: len(stage1)] == stage1
    names = initrd_entry_names(out)
    assert names["registration"] == ["nix-path-registration"]
    assert not [n for entries in names.values() for n in entries if n.startswith("nix/store")]


def test_vm_9p_boots_the_hosts_store_through_run_qemu(out_9p: Path, system_9p: FixtureClosure) -> None:
    run = run_qemu(out_9p)
    assert run.line("NETBUILD-VM-LOWER") == "9p"
    assert_guest_store_is_closure(run, system_9p, out_9p)
    assert_writes_stayed_in_the_guest(run)
    assert run.line("NETBUILD-VM-FOUND") == "root=no store=no"
    assert run.status == 0


def test_vm_9p_build_reads_nothing_of_the_closure(
    system_9p: FixtureClosure, generic: GenericKernel, kernel_image: Path, tmp_path: Path
) -> None:
    """The fixture's closure and the same with a 64 MiB store path more: a vm-9p build reads (read(2)
    bytes, /proc/self/io's rchar) no more for the larger, where vm-disk, which packs, reads it all."""
    big = nix_build(FIXTURES / "vm-big.nix", {})
    larger = tmp_path / "larger.json"
    larger.write_text(json.dumps(path_info([system_9p.root, big])))
    options = ["--modules", str(generic.modules), "--kernel-config", str(generic.config)]
    small_read = bytes_read([str(system_9p.closure_json), "-o", str(tmp_path / "a"), "--recipe", "vm-9p", *options])
    large_read = bytes_read([str(larger), "-o", str(tmp_path / "b"), "--recipe", "vm-9p", *options])
    assert large_read - small_read < 1 << 20, (small_read, large_read)
    packed = bytes_read([str(larger), "-o", str(tmp_path / "c"), "--recipe", "vm-disk", "--kernel",
                         str(generic.vmlinuz), *options])
    assert packed - large_read > 64 << 20, (large_read, packed)  # the measure does see a packing build's reads
    print(f"vm-9p build: {small_read} bytes read for the fixture, {large_read} with 64 MiB more closure; "
          f"vm-disk: {packed}")


def bytes_read(args: list[str]) -> int:
    """netbuild ARGS in a process of its own that reports, as it exits, the bytes it read."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: sys.stderr.write('RCHAR ' + open('/proc/self/io').read().split()[1] + '\\n'))\n"
            f"sys.argv = ['netbuild', *{args!r}]\n"
            "runpy.run_module('builder', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("RCHAR ")]
    return int(line.split()[1])


# --- vm-disk -----------------------------------------------------------------------------------------


def test_vm_disk_out_holds_a_reproducible_store_img(out_disk: Path, system_disk: FixtureClosure,
                                                     kernel_image: Path, tmp_path: Path) -> None:
    names = initrd_entry_names(out_disk)
    assert list(names) == ["stage1"]
    assert not [n for n in names["stage1"] if n.startswith(("nix/store", "/nix/store"))]
    image = out_disk / "store.img"
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert f"{digest}  store.img\n" in (out_disk / "SHA256SUMS").read_text()
    assert manifest(out_disk)["artifacts"]["store.img"] == {"size": image.stat().st_size,  # type: ignore[index]
                                                            "sha256": digest}
    listing = subprocess.run(["unsquashfs", "-l", "-no-progress", str(image)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    top = sorted(line.split("/")[1] for line in listing if line.startswith("squashfs-root/") and line.count("/") == 1)
    assert top == sorted([Path(p).name for p in system_disk.paths] + ["nix-path-registration"])
    inside = subprocess.run(["unsquashfs", "-cat", str(image), "nix-path-registration"], capture_output=True,
                            check=True).stdout
    assert inside == (out_disk / "registration").read_bytes()
    # Built again elsewhere, with other jobs, umask and time zone: the same bytes.
    again = tmp_path / "elsewhere" / "out"
    again.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "builder", str(system_disk.closure_json), "-o", str(again), "-j", "2",
                           *disk_options(kernel_image)], cwd=again.parent, capture_output=True, timeout=600,
                          env={**os.environ, "TZ": "Asia/Kolkata", "PYTHONPATH": str(REPO)},
                          preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode == 0, proc.stderr.decode()
    for name in sorted(os.listdir(out_disk)):
        assert (again / name).read_bytes() == (out_disk / name).read_bytes(), name


def test_vm_disk_boots_store_img_through_run_qemu(out_disk: Path, system_disk: FixtureClosure) -> None:
    before = hashlib.sha256((out_disk / "store.img").read_bytes()).hexdigest()
    run = run_qemu(out_disk)
    assert run.line("NETBUILD-VM-LOWER") == "squashfs"
    assert_guest_store_is_closure(run, system_disk, out_disk)  # the whole store: the image is the closure
    assert_writes_stayed_in_the_guest(run)
    assert hashlib.sha256((out_disk / "store.img").read_bytes()).hexdigest() == before  # attached read-only


# --- persistence and shares --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["vm-9p", "vm-disk"])
def test_nix_disk_image_keeps_writes_from_run_to_run(layout: str, out_9p: Path, out_disk: Path,
                                                     tmp_path: Path) -> None:
    out = out_9p if layout == "vm-9p" else out_disk
    disk = tmp_path / "disk.qcow2"
    env = {"NIX_DISK_IMAGE": str(disk), "NETBUILD_DISK_SIZE": "128M"}
    first = run_qemu(out, env=env)
    assert f"run-qemu: created {disk} (128M)" in first.console
    assert "netbuild stage 1: formatting /dev/" in first.console
    assert first.line("NETBUILD-VM-FOUND") == "root=no store=no"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                                     check=True).stdout)
    assert info["format"] == "qcow2"
    second = run_qemu(out, env=env)
    assert "run-qemu: created" not in second.console and "formatting" not in second.console
    assert second.line("NETBUILD-VM-FOUND") == "root=yes store=yes"  # both files of the first run are back
    assert_writes_stayed_in_the_guest(second)
    # Without the disk image, the same OUT keeps nothing: every run starts from the closure again.
    without = [run_qemu(out), run_qemu(out)] if layout == "vm-9p" else [run_qemu(out)]
    for run in without:
        assert run.line("NETBUILD-VM-FOUND") == "root=no store=no"


def test_a_share_is_visible_and_writable(out_9p: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared,dir"  # a comma, which run-qemu must double for QEMU
    shared.mkdir()
    (shared / "from-host").write_text("hello from the host\n")
    # HOSTDIR relative to run-qemu's working directory.
    run = run_qemu(out_9p, env={"NETBUILD_SHARES": "shared,dir:/mnt/shared"}, cwd=tmp_path)
    assert "netbuild stage 1: share share0 on /mnt/shared (rw)" in run.console
    assert run.line("NETBUILD-VM-SHARE") == "hello from the host"
    assert (shared / "from-guest").read_text() == "written by the guest\n"
    # Read-only: the guest sees the files and cannot write.
    (shared / "from-guest").unlink()
    read_only = run_qemu(out_9p, env={"NETBUILD_SHARES": f"{shared}:/mnt/shared:ro"}, expect_ok=False)
    assert "netbuild stage 1: share share0 on /mnt/shared (ro)" in read_only.console
    assert read_only.line("NETBUILD-VM-FAILED") == "cannot write /mnt/shared/from-guest"
    assert not (shared / "from-guest").exists()


def test_a_bad_share_is_one_line_before_qemu_starts(out_9p: Path, tmp_path: Path) -> None:
    for value in (f"{tmp_path}/missing:/mnt/x", f"{tmp_path}:relative/path", f"{tmp_path}:/with space"):
        run = run_qemu(out_9p, env={"NETBUILD_SHARES": value}, expect_ok=False)
        assert run.status == 1
        lines = run.console.splitlines()
        assert len(lines) == 1 and lines[0].startswith("run-qemu: error: NETBUILD_SHARES: '"), run.console


def test_a_share_the_kernel_cannot_mount_is_one_console_line(out_disk: Path, tmp_path: Path) -> None:
    """The cloud kernel has no 9p: vm-disk boots with it, but a share cannot be mounted, and the stage 1
    says so in one line naming the modules and options, then the kernel's panic=-1 ends the boot."""
    run = run_qemu(out_disk, env={"NETBUILD_SHARES": f"{tmp_path}:/mnt/shared"}, expect_ok=False)
    # (The line may follow the firmware's terminal reset on the same console line.)
    errors = [line for line in run.console.splitlines() if "netbuild stage 1: error:" in line]
    assert len(errors) == 1 and errors[0].endswith(
        "netbuild stage 1: error: the share /mnt/shared (NETBUILD_SHARES) needs 9pnet_virtio "
        "(CONFIG_NET_9P_VIRTIO), 9p (CONFIG_9P_FS), which this kernel has neither built in nor loaded from "
        "the stage 1's modules"), errors
    assert "Kernel panic - not syncing: Attempted to kill init" in run.console


# --- refusals ------------------------------------------------------------------------------------------


def refused(run_netbuild: RunNetbuild, out: Path, *args: str) -> str:
    proc = run_netbuild(*args, "-o", str(out), check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0, f"netbuild {args} succeeded"
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert not out.exists()
    return stderr


def test_vm_9p_is_refused_for_a_kernel_without_9p(system_disk: FixtureClosure, kernel_image: Path,
                                                  run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    config = debian_kernel_config(kernel_image, kernel_release(kernel_image))
    assert "# CONFIG_NET_9P is not set" in config.read_text().splitlines()
    args = [str(system_disk.closure_json), "--recipe", "vm-9p", "--modules", str(host_modules(kernel_image)),
            "--kernel-config", str(config)]
    stderr = refused(run_netbuild, tmp_path / "out", *args)
    kernel = system_disk.path_named(f"-linux-{kernel_release(kernel_image)}")
    assert stderr == (f"error: {kernel}/bzImage cannot mount the vm-9p layout's store: CONFIG_NET_9P (the 9p "
                      "protocol), CONFIG_NET_9P_VIRTIO (9p over virtio), CONFIG_9P_FS (the 9p file system) are not "
                      f"set in {config} (Debian's cloud kernel has no 9p: use its generic one, linux-image-amd64, "
                      "or the vm-disk layout); --force builds anyway\n")
    # --force gets past the configuration, not past the modules the stage 1 cannot have.
    proc = run_netbuild(*args, "-o", str(tmp_path / "out"), "--force", check=False)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode != 0 and not (tmp_path / "out").exists()
    assert lines[0].startswith("warning: ") and lines[0].endswith("(--force: building anyway)")
    assert lines[1:] == [f"error: --modules {host_modules(kernel_image)}: the vm-9p layout's stage 1 needs 9p, but "
                         "there is no such module and modules.builtin does not list it"]


def test_vm_9p_refuses_a_store_root(system_9p: FixtureClosure, generic: GenericKernel, run_netbuild: RunNetbuild,
                                    tmp_path: Path) -> None:
    """run-qemu shares the host's own /nix/store: a copy of the closure elsewhere cannot be booted."""
    root = tmp_path / "root"
    (root / "nix" / "store").mkdir(parents=True)
    for path in system_9p.paths:
        subprocess.run(["cp", "-a", path, str(root / path.lstrip("/"))], check=True)
    stderr = refused(run_netbuild, tmp_path / "out", str(system_9p.closure_json), "--recipe", "vm-9p",
                     "--store-root", str(root), "--modules", str(generic.modules))
    assert stderr == (f"error: --store-root {root}: the vm-9p layout boots the host's own /nix/store (run-qemu "
                      "shares it), not a copy elsewhere; use vm-disk\n")


# --- netbuild boot, netbuild.run, netbuild.shell ---------------------------------------------------------


def test_netbuild_boot_runs_both_layouts(out_9p: Path, out_disk: Path, system_disk: FixtureClosure,
                                         run_netbuild: RunNetbuild) -> None:
    proc = run_netbuild("boot", str(out_9p), "--accel", "tcg", "--expect", "NETBUILD-VM-OK", "--timeout", "150")
    assert "NETBUILD-VM-LOWER 9p" in proc.stdout.decode(errors="replace")
    proc = run_netbuild("boot", str(out_disk), "--accel", "tcg", "--timeout", "150",
                        "--append", f'netbuild.run="{system_disk.root}/sw/bin/ls /nix/store"')
    console = proc.stdout.decode(errors="replace").replace("\r\n", "\n").splitlines()
    assert "nix-path-registration" in console  # the store from store.img, listed by a program of the closure
    assert "netbuild.run: exit status 0" in console


def test_netbuild_shell_in_vm_9p(out_9p: Path, system_9p: FixtureClosure) -> None:
    params = (out_9p / "kernel-params").read_text().strip() + " netbuild.shell"
    extra = tuple(store_qemu_args("vm-9p", str(out_9p)))
    with SerialConsole(out_9p / "bzImage", out_9p / "initrd", params, extra=extra) as console:
        console.expect(r"netbuild\.shell # ")
        console.type(f"test -x {system_9p.root}/init && echo NETBUILD-SHELL-SEES-$((6*7)); exit")
        console.expect(r"\nNETBUILD-SHELL-SEES-42\r?\n")  # the store over 9p, seen from the shell
        assert console.wait_exit() == 0 and "reboot: Power down" in console.text
