"""Preflight: every kind of unbootable closure is refused with one `error:` line naming what is at
fault — and, once per kind, the same closure packed WITHOUT the check really fails to boot in QEMU
(or, for the two size limits, cannot be packed or loaded at all), so each check guards a real failure.

The closures are real Nix builds (tests/fixtures/broken-systems.nix): a BusyBox system whose init,
kernel or parameters are broken in exactly one way, and a `good` control of the same shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RunNetbuild, SystemClosure
from support.broken import BIG_KINDS, SMALL_KINDS, BrokenSystem, boot_to_the_end, build_kinds, debian_kernel_config
from support.qemu import boot, kernel_release

from builder.build import build
from builder.checks.preflight import check_initrd_size
from builder.closure import load_closure
from builder.errors import NetbuildError
from builder.formats.compress import parse_compression
from builder.layouts.initramfs import INITRAMFS as initramfs
from builder.plan import Options, make_plan
from builder.recipe import load_recipe

pytestmark = [pytest.mark.nix]

MISSING = "/nix/store/00000000000000000000000000000000-netbuild-missing"
# How an init that cannot start fails: netbuild's /init (builder/preinit) says so, as the kernel
# would, and exits; the kernel panics.
PREINIT_FAILED = "netbuild /init: failed to execute"
INIT_GONE = "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"


@pytest.fixture(scope="module")
def broken(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, BrokenSystem]:
    return build_kinds(SMALL_KINDS, kernel_image, kernel_release(kernel_image), tmp_path_factory.mktemp("broken"))


@pytest.fixture(scope="module")
def big(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, BrokenSystem]:
    """Sparse files of 4 GiB and 2 GiB + 64 MiB in the store: Nix hashes them once (~30 s)."""
    return build_kinds(BIG_KINDS, kernel_image, kernel_release(kernel_image), tmp_path_factory.mktemp("big"))


def refused(run_netbuild: RunNetbuild, tmp_path: Path, system: BrokenSystem, *args: str) -> str:
    """Run netbuild on the system; it must fail with exactly one `error:` line and leave no OUT."""
    out = tmp_path / "out"
    proc = run_netbuild(str(system.closure_json), "-o", str(out), *args, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert not out.exists()
    return stderr


def pack_unchecked(system: BrokenSystem, out: Path, **options: object) -> Path:
    """What netbuild would have published without its preflight."""
    closure = load_closure(str(system.closure_json), system.closure_json.read_bytes())
    build(closure, load_recipe("netboot"), Options(jobs=2, **options), out, run_preflight=False)  # type: ignore[arg-type]
    return out


def boot_out(out: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    return boot_to_the_end(out / "bzImage", out / "initrd", (out / "kernel-params").read_text().strip(), **kwargs)


# --- the control: same shape, nothing broken --------------------------------------------------


@pytest.mark.boot
def test_the_control_system_passes_and_boots(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    proc = run_netbuild(str(broken["good"].closure_json), "-o", str(out))
    assert b"warning" not in proc.stderr
    boot(out / "bzImage", out / "initrd", (out / "kernel-params").read_text().strip())


# --- init ------------------------------------------------------------------------------------


def test_init_missing_from_the_image_is_refused(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["initDangling"]
    stderr = refused(run_netbuild, tmp_path, system)
    assert stderr == (f"error: the toplevel's init {system.toplevel}/init is not in the image: {MISSING} is not in "
                      "the closure; starting it would fail with error -2 (ENOENT)\n")


def test_init_from_another_closure_is_refused(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--init naming a store path that exists on this machine but is not shipped."""
    good = broken["good"].toplevel
    stderr = refused(run_netbuild, tmp_path, broken["initNotExecutable"], "--init", f"{good}/init")
    assert f"--init {good}/init belongs to {good}, which is not in the closure" in stderr


@pytest.mark.boot
def test_init_missing_really_fails_to_boot(broken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["initDangling"]
    result = boot_out(pack_unchecked(system, tmp_path / "out"))
    assert f"{PREINIT_FAILED} {system.toplevel}/init (error -2)" in result.console, result.console[-3000:]
    assert INIT_GONE in result.console


@pytest.mark.parametrize(("kind", "expected"), [
    ("initNotExecutable", "is not executable; the kernel would fail with error -13 (EACCES)"),
    ("initNotRegular", "is not a regular file; the kernel can only execute a file"),
])
def test_init_not_a_regular_executable_is_refused(broken, run_netbuild, tmp_path: Path, kind, expected) -> None:  # type: ignore[no-untyped-def]
    system = broken[kind]
    assert refused(run_netbuild, tmp_path, system) == f"error: the toplevel's init {system.toplevel}/init {expected}\n"


@pytest.mark.boot
def test_init_not_executable_really_fails_to_boot(broken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["initNotExecutable"]
    console = boot_out(pack_unchecked(system, tmp_path / "out")).console
    assert f"{PREINIT_FAILED} {system.toplevel}/init (error -13)" in console, console[-3000:]
    assert INIT_GONE in console


# --- what init runs first: `#!` interpreters, ELF loader and libraries -----------------------


def test_missing_interpreter_at_the_end_of_a_chain_is_refused(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["interpreterMissing"]
    launcher = system.path_named("-launcher")
    stderr = refused(run_netbuild, tmp_path, system)
    assert stderr.startswith(
        f"error: the toplevel's init {system.toplevel}/init → {launcher}/bin/launch → /bin/sh: "
        "the `#!` interpreter is not in the image (/bin is outside /nix/store"
    ), stderr


@pytest.mark.boot
def test_missing_interpreter_really_fails_to_boot(broken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["interpreterMissing"]
    console = boot_out(pack_unchecked(system, tmp_path / "out")).console
    assert f"{PREINIT_FAILED} {system.toplevel}/init (error -2)" in console, console[-3000:]
    assert INIT_GONE in console


def test_elf_init_without_its_loader_is_refused(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["elfInterpreterMissing"]
    stderr = refused(run_netbuild, tmp_path, system)
    assert stderr.startswith(
        f"error: the toplevel's init {system.toplevel}/init: a dynamically linked ELF program whose loader "
        "(PT_INTERP) /lib64/ld-linux-x86-64.so.2 is not in the image;"
    ), stderr


@pytest.mark.boot
def test_elf_init_without_its_loader_really_fails_to_boot(broken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["elfInterpreterMissing"]
    console = boot_out(pack_unchecked(system, tmp_path / "out")).console
    assert f"{PREINIT_FAILED} {system.toplevel}/init (error -2)" in console, console[-3000:]


def test_elf_init_without_its_library_is_refused_unless_forced(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["elfLibraryMissing"]
    loader_only = system.path_named("-glibc-loader-only")
    stderr = refused(run_netbuild, tmp_path, system)
    # RUNPATH is "$ORIGIN/../lib:<loader-only>/lib": $ORIGIN expanded, then the store path.
    assert stderr.startswith(
        f"error: the toplevel's init {system.toplevel}/init: it needs the library libc.so.6, found in none of "
        f"/nix/store/lib, {loader_only}/lib, /lib/x86_64-linux-gnu, … in the image;"
    ), stderr
    assert stderr.endswith("; --force builds anyway\n")

    out = tmp_path / "forced"
    proc = run_netbuild(str(system.closure_json), "-o", str(out), "--force")
    warning = stderr.removeprefix("error: ").removesuffix("; --force builds anyway\n") + " (--force: building anyway)"
    assert proc.stderr.decode().splitlines()[0] == f"warning: {warning}"
    assert json.loads((out / "manifest.json").read_text())["warnings"] == [warning]


@pytest.mark.boot
def test_elf_init_without_its_library_really_fails_to_boot(broken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["elfLibraryMissing"]
    console = boot_out(pack_unchecked(system, tmp_path / "out")).console
    assert "error while loading shared libraries: libc.so.6: cannot open shared object file" in console, console
    assert "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00" in console


@pytest.mark.boot
def test_elf_init_with_everything_it_loads_passes_and_runs(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The negative control of the ELF checks: loader and libc in the closure, found through the same
    RUNPATH — netbuild accepts it, and in the guest the real loader runs /bin/true to a clean exit."""
    out = tmp_path / "out"
    proc = run_netbuild(str(broken["elfComplete"].closure_json), "-o", str(out))
    assert b"warning" not in proc.stderr
    console = boot_out(out).console
    assert "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000" in console, console[-3000:]
    assert "error while loading shared libraries" not in console


# --- the kernel: command line, image, configuration --------------------------------------------


def test_command_line_too_long_is_refused(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["cmdlineTooLong"]
    stderr = refused(run_netbuild, tmp_path, system)
    assert "kernel command line is 2256 bytes (with initrd=initrd) but " in stderr  # init=…, 2100 x's of padding
    assert "-linux-" in stderr and "/bzImage accepts at most 2047" in stderr, stderr


@pytest.mark.boot
def test_command_line_too_long_really_fails_to_boot(broken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The control system (same kernel, same init, short parameters) prints NETBUILD-BOOT-OK within
    seconds; with 2258 bytes of parameters QEMU's x86 loader never starts the kernel: no output at all."""
    out = pack_unchecked(broken["cmdlineTooLong"], tmp_path / "out")
    assert len((out / "kernel-params").read_text().strip()) > 2047
    result = boot_out(out, timeout=15)
    assert not result.exited and "NETBUILD-BOOT-OK" not in result.console
    assert result.console.strip() == "", result.console[-2000:]


def test_kernel_that_is_not_a_boot_image_is_refused(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    system = broken["kernelNotBootable"]
    busybox = system.path_named("-busybox")
    stderr = refused(run_netbuild, tmp_path, system)
    assert stderr == (f"error: {busybox}/bin/busybox: not an x86 bzImage (no boot flag 0xAA55 at 0x1FE) nor an arm64 "
                      "Image (no magic ARM\\x64 at 0x38)\n")


@pytest.mark.boot
def test_kernel_that_is_not_a_boot_image_really_fails_to_boot(broken, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    """OUT/bzImage would be a copy of the toplevel's `kernel`: QEMU refuses to load it."""
    kernel = Path(broken["kernelNotBootable"].toplevel) / "kernel"
    result = boot_to_the_end(kernel, built_out / "initrd", "console=ttyS0", timeout=30)
    assert result.exited and result.returncode != 0
    assert "Error loading uncompressed kernel without PVH ELF Note" in result.console, result.console


def test_compression_the_kernel_lacks_is_refused(broken, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The kernel's `config` beside it in its store path says `# CONFIG_RD_ZSTD is not set`.

    No boot proves this one: every kernel Debian ships has all CONFIG_RD_* built in, and building a
    kernel without one is out of reach here. What the kernel does is in init/initramfs.c: a codec
    it was built without gives "Initramfs unpacking failed: compression method zstd not configured",
    then the root-device fallback ends in "VFS: Unable to mount root fs".
    """
    system = broken["zstdNotInKernelConfig"]
    linux = system.path_named("-config-without-zstd")
    stderr = refused(run_netbuild, tmp_path, system)
    assert stderr == (f"error: {linux}/bzImage cannot unpack a zstd initrd (CONFIG_RD_ZSTD is not set in "
                      f"{linux}/config); choose --compress gzip, xz, none; --force builds anyway\n")
    # A codec the config has passes; so does the same kernel given its own, unedited configuration.
    run_netbuild(str(system.closure_json), "-o", str(tmp_path / "gzip"), "--compress", "gzip")


def test_kernel_config_option_and_debian_config_beside_the_kernel(  # type: ignore[no-untyped-def]
    system_closure: SystemClosure, kernel_image: Path, run_netbuild, tmp_path: Path
) -> None:
    config = debian_kernel_config(kernel_image, kernel_release(kernel_image))
    edited = tmp_path / "config"
    text = config.read_text()
    assert "CONFIG_RD_GZIP=y\n" in text
    edited.write_text(text.replace("CONFIG_RD_GZIP=y\n", "# CONFIG_RD_GZIP is not set\n"))
    system = BrokenSystem("system", system_closure.toplevel, system_closure.closure_json)
    stderr = refused(run_netbuild, tmp_path, system, "--compress", "gzip", "--kernel-config", str(edited))
    assert f"cannot unpack a gzip initrd (CONFIG_RD_GZIP is not set in {edited}); choose --compress zstd, xz" in stderr
    # --kernel /boot/vmlinuz-R finds /boot/config-R beside it, which has every codec: no complaint.
    proc = run_netbuild(str(system.closure_json), "-o", str(tmp_path / "debian"), "--kernel", str(kernel_image),
                        "--compress", "gzip:1")
    assert b"warning" not in proc.stderr and b"error" not in proc.stderr


# --- sizes: a file of 4 GiB, an initrd past initrd_addr_max ----------------------------------


def test_file_of_4_gib_is_refused_before_packing(big, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No boot proves this one: the file cannot be packed at all. cpio newc stores a file's size in
    8 hex digits, so 4 GiB does not fit; a writer that wrapped it would store 0 bytes and the
    kernel would unpack an empty file. netbuild's own writer, run without the preflight, stops at
    the same file — after packing everything before it; the preflight says so from file sizes alone."""
    system = big["fileTooLarge"]
    big_file = system.path_named("-big-file") + "/big.img"
    stderr = refused(run_netbuild, tmp_path, system)
    assert stderr.startswith(f"error: {big_file} is 4294967296 bytes: the initrd's cpio format (newc) cannot hold "
                             "a file of 4 GiB or more"), stderr
    with pytest.raises(NetbuildError, match="4294967296 bytes is too large for cpio newc"):
        pack_unchecked(system, tmp_path / "unchecked")
    assert not (tmp_path / "unchecked").exists()


@pytest.mark.boot
def test_initrd_past_initrd_addr_max_is_refused_and_cannot_be_loaded(big, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Debian's kernel says initrd_addr_max 0x7fffffff and also XLF_CAN_BE_LOADED_ABOVE_4G. QEMU's
    -kernel loader uses that flag and would load this initrd anyway (it then fails for lack of memory,
    which proves little); iPXE and BIOS loaders keep to initrd_addr_max. So the error can be forced,
    and the proof boots the same kernel as such a loader sees it: the flag cleared in a copy of its
    header (the flag only tells loaders what they may do; the kernel's code is unchanged)."""
    system = big["initrdTooLarge"]
    stderr = refused(run_netbuild, tmp_path, system, "--compress", "none")
    assert stderr.startswith("error: the initrd will be at least 22"), stderr
    assert "loads an initrd only below 2147483648 bytes (initrd_addr_max); use a stronger --compress" in stderr
    assert stderr.endswith("(QEMU's -kernel, UEFI) can load it, not iPXE; --force builds anyway\n"), stderr

    # Packed without the check (the layout's writer straight to a file), the initrd is 2.06 GiB.
    closure = load_closure(str(system.closure_json), system.closure_json.read_bytes())
    plan = make_plan(closure, load_recipe("netboot"), Options(compression=parse_compression("none"), jobs=2))
    initrd = tmp_path / "initrd"
    try:
        with open(initrd, "wb") as f:
            initramfs.write(f, plan, None)
        size = initrd.stat().st_size
        assert size > plan.kernel.header.initrd_addr_max + 1
        with pytest.raises(NetbuildError, match=f"the initrd is {size} bytes but"):
            check_initrd_size(plan, size)  # the build's own check after writing, on the real file

        kernel = tmp_path / "bzImage"
        image = bytearray(plan.kernel.file.read_bytes())
        image[0x236] &= ~0x02  # xloadflags: XLF_CAN_BE_LOADED_ABOVE_4G cleared
        kernel.write_bytes(image)
        # 3 GiB of RAM: only initrd_addr_max stands in the way, not the memory below 4 GiB.
        result = boot_to_the_end(kernel, initrd, plan.cmdline, timeout=60, memory_mb=3072)
        assert result.exited and result.returncode != 0
        assert "initrd is too large" in result.console and "max: 2147483647" in result.console, result.console
    finally:
        initrd.unlink(missing_ok=True)  # 2 GiB of disk
