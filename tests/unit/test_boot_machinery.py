"""The parts of `netbuild boot` below QEMU's console: how the console is watched (fed by real
processes that print what firmware and kernels print), the QEMU command line of every path, the
accelerator probe (run under TCG: the tests never touch /dev/kvm), memory sizing and byte ranges."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from builder.errors import NetbuildError
from builder.run.accel import accelerator_runs, choose_accelerator
from builder.run.console import ConsoleWatcher, Ending, clean
from builder.run.memory import boot_memory_mib, default_memory_mib, pages
from builder.run.qemu import CHAIN_SCRIPT, IMAGE_LINK, BootOptions, boot, prepared_launch
from builder.run.serve import parse_range

# Writes its argv[1:] to stdout one by one, pausing between them, then sleeps for argv[0] seconds.
_PRINTER = "import sys, time\nfor part in sys.argv[2:]:\n    sys.stdout.buffer.write(part.encode('latin-1')" \
           ".decode('unicode_escape').encode('latin-1')); sys.stdout.flush(); time.sleep(0.05)\n" \
           "sys.stderr.write('from stderr\\n'); time.sleep(float(sys.argv[1]))\n"


def _watch(*parts: str, expect: str | None = None, timeout: float | None = 10, linger: float = 0):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-c", _PRINTER, str(linger), *parts], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    sink, errors = io.BytesIO(), io.BytesIO()
    try:
        outcome = ConsoleWatcher(proc, sink=sink, error_sink=errors, expect=expect, timeout=timeout).watch()
    finally:
        proc.kill()
        proc.wait()
    return outcome, sink.getvalue(), errors.getvalue()


def test_expect_is_found_across_writes_and_escapes() -> None:
    # Firmware draws text with cursor movements; the marker arrives cut in pieces, escapes between.
    outcome, raw, _ = _watch("SeaBIOS\\r\\n\\x1b[25;1HNETB", "\\x1b[25;5HUILD-", "BOOT-OK\\r\\n", linger=30,
                             expect="NETBUILD-BOOT-OK")
    assert outcome.ending is Ending.EXPECTED and outcome.elapsed < 10
    assert raw == b"SeaBIOS\r\n\x1b[25;1HNETB\x1b[25;5HUILD-BOOT-OK\r\n"  # passed through untouched


def test_an_escape_cut_between_reads_is_still_removed() -> None:
    outcome, _, _ = _watch("a\\x1b", "[2Jb\\x1b[", "?7lc\\n", expect="abc", linger=30)
    assert outcome.ending is Ending.EXPECTED


def test_panic_is_reported_with_its_reason() -> None:
    outcome, _, _ = _watch("[ 1.0] Kernel panic - not syncing: ", "VFS: Unable to mount root fs\\r\\n", linger=30,
                           expect="NEVER")
    assert (outcome.ending, outcome.detail) == (Ending.PANIC, "VFS: Unable to mount root fs")


def test_exit_timeout_and_nothing_to_boot() -> None:
    outcome, _, errors = _watch("booted\\n", expect="NEVER")
    assert outcome.ending is Ending.EXITED and outcome.tail == "booted"
    assert errors == b"from stderr\n"  # QEMU's own messages are passed on
    outcome, _, _ = _watch("slow\\n", expect="NEVER", timeout=1, linger=30)
    assert outcome.ending is Ending.TIMEOUT and 1 <= outcome.elapsed < 5
    for printed, reason in [
        (["No bootable device.\\r\\n"], "No bootable device."),  # SeaBIOS
        # iPXE gave up; the line comes in two writes and is reported whole
        (["Could not boot image: No such file ", "(http://ipxe.org/2d0c613b)\\r\\nmore\\n"],
         "Could not boot image: No such file (http://ipxe.org/2d0c613b)"),
        (["UEFI Interactive Shell v2.2\\r\\n"], "UEFI Interactive Shell"),  # OVMF fell through to its shell
    ]:
        outcome, _, _ = _watch(*printed, expect="NEVER", linger=30)
        assert outcome.ending is Ending.NOTHING_TO_BOOT and outcome.detail == reason, printed


def test_clean() -> None:
    assert clean(b"\x1bc\x1b[?7l\x1b[2J\x1b[0;1miPXE\x1b[0m ok\r\n") == "iPXE ok\n"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for name, data in (("bzImage", b"k"), ("initrd", b"i" * 1000), ("kernel-params", b"rdinit=/init quiet\n"),
                       ("netboot.ipxe", b"#!ipxe\n")):
        (out / name).write_bytes(data)
    return out


def _value(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


@pytest.mark.qemu
def test_direct_command(out_dir: Path) -> None:
    with prepared_launch(out_dir, BootOptions(accel="tcg", append="x=1", memory_mib=700, cpus=2)) as launch:
        cmd = launch.command
        assert cmd[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
        assert (_value(cmd, "-m"), _value(cmd, "-smp"), _value(cmd, "-machine")) == ("700", "2", "graphics=off")
        assert _value(cmd, "-kernel") == str(out_dir / "bzImage") and _value(cmd, "-append") == "rdinit=/init quiet x=1"
        assert "-no-reboot" in cmd and "bootindex=1" not in _value(cmd, "-device")


@pytest.fixture
def arm64_out(tmp_path: Path) -> Path:
    out = tmp_path / "arm64-out"
    out.mkdir()
    for name, data in (("Image", b"k"), ("initrd", b"i" * 1000), ("kernel-params", b"init=/x console=ttyAMA0\n"),
                       ("boot.scr.uimg", b"s"), ("netboot.efi", b"MZ")):
        (out / name).write_bytes(data)
    (out / "pxelinux.cfg").mkdir()
    (out / "pxelinux.cfg" / "default").write_bytes(b"DEFAULT netbuild\n")
    return out


@pytest.mark.qemu
def test_arm64_commands(arm64_out: Path) -> None:
    """An OUT with an Image boots on qemu-system-aarch64's virt machine: directly, with AAVMF, with U-Boot."""
    with prepared_launch(arm64_out, BootOptions(accel="auto", memory_mib=600)) as launch:
        cmd = launch.command
        # TCG whatever KVM can do: KVM runs only the host's own architecture.
        assert cmd[:7] == ["qemu-system-aarch64", "-accel", "tcg", "-machine", "virt", "-cpu", "max,pauth-impdef=on"]
        assert _value(cmd, "-kernel") == str(arm64_out / "Image") and "graphics=off" not in cmd
    with prepared_launch(arm64_out, BootOptions(via="uefi-http", accel="tcg", memory_mib=600)) as launch:
        assert any(a.endswith("file=/usr/share/AAVMF/AAVMF_CODE.fd") for a in launch.command)
    with prepared_launch(arm64_out, BootOptions(via="uboot", accel="tcg", memory_mib=600)) as launch:
        cmd = launch.command
        assert _value(cmd, "-bios") == "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
        assert _value(cmd, "-netdev") == f"user,id=net0,tftp={arm64_out},bootfile=boot.scr.uimg"
    for via, message in (("tftp", "iPXE, which Debian has for x86 only"), ("http", "iPXE, which Debian has")):
        with pytest.raises(NetbuildError, match=message):
            boot(arm64_out, BootOptions(via=via, accel="tcg"))


@pytest.mark.qemu
def test_uboot_is_for_an_arm64_out(out_dir: Path) -> None:
    (out_dir / "boot.scr.uimg").write_bytes(b"s")
    (out_dir / "pxelinux.cfg").mkdir()
    (out_dir / "pxelinux.cfg" / "default").write_bytes(b"DEFAULT netbuild\n")
    with pytest.raises(NetbuildError, match="--via uboot boots an arm64 OUT"):
        boot(out_dir, BootOptions(via="uboot", accel="tcg"))


@pytest.mark.qemu
def test_tftp_command_serves_out_or_a_chain_script(out_dir: Path) -> None:
    with prepared_launch(out_dir, BootOptions(via="tftp", accel="tcg")) as launch:
        assert _value(launch.command, "-netdev") == f"user,id=net0,tftp={out_dir},bootfile=netboot.ipxe"
        assert _value(launch.command, "-device") == "virtio-net-pci,netdev=net0,bootindex=1"
    options = BootOptions(via="tftp", accel="tcg", append="quiet", settings=(("netbuild-image", "b"),))
    with prepared_launch(out_dir, options) as launch:
        netdev = _value(launch.command, "-netdev")
        root = Path(netdev.split("tftp=")[1].split(",")[0])
        assert netdev.endswith(f",bootfile={CHAIN_SCRIPT}")
        assert (root / IMAGE_LINK).resolve() == out_dir.resolve()
        script = (root / CHAIN_SCRIPT).read_text()
        assert "\nset netbuild-image b\nset cmdline quiet\nchain image/netboot.ipxe\n" in script
    assert not root.exists()  # temporary files go with the boot


def _devices(command: list[str]) -> list[str]:
    return [command[i + 1] for i, a in enumerate(command) if a == "-device"]


@pytest.mark.qemu
def test_http_and_uefi_command(out_dir: Path, tmp_path: Path) -> None:
    ipxe_efi = tmp_path / "snponly.efi"
    ipxe_efi.write_bytes(b"MZ an iPXE for UEFI")
    with prepared_launch(out_dir, BootOptions(via="http", uefi=True, accel="tcg", ipxe_efi=ipxe_efi)) as launch:
        assert launch.server is not None
        port = launch.server.port
        netdev = _value(launch.command, "-netdev")
        root = Path(netdev.split("tftp=")[1].split(",")[0])
        # One boot file for both clients: iPXE fetches the URL; the firmware's PXE client asks QEMU's
        # TFTP server for a file of that literal name, and gets iPXE (not the script).
        assert netdev == f"user,id=net0,tftp={root},bootfile=http://10.0.2.2:{port}/netboot.ipxe"
        assert (root / f"http:/10.0.2.2:{port}/netboot.ipxe").read_bytes() == ipxe_efi.read_bytes()
        # No iPXE option ROM (the firmware's own PXE client boots, as on a real UEFI machine), and an
        # RNG, without which newer OVMF offers no network boot.
        assert _devices(launch.command) == ["virtio-net-pci,netdev=net0,bootindex=1,romfile=", "virtio-rng-pci"]
        drives = [launch.command[i + 1] for i, a in enumerate(launch.command) if a == "-drive"]
        assert drives[0].startswith("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE")
        variables = Path(drives[1].split("file=")[1])
        assert variables.read_bytes() == Path("/usr/share/OVMF/OVMF_VARS_4M.fd").read_bytes()  # a private copy
        assert "graphics=off" not in launch.command
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/netboot.ipxe", timeout=10) as response:
            assert response.read() == b"#!ipxe\n"


@pytest.mark.qemu
def test_uefi_tftp_command_gives_the_firmware_ipxe_and_ipxe_the_script(out_dir: Path, tmp_path: Path) -> None:
    ipxe_efi = tmp_path / "snponly.efi"
    ipxe_efi.write_bytes(b"MZ an iPXE for UEFI")
    options = BootOptions(via="tftp", uefi=True, accel="tcg", ipxe_efi=ipxe_efi, append="quiet")
    with prepared_launch(out_dir, options) as launch:
        netdev = _value(launch.command, "-netdev")
        root = Path(netdev.split("tftp=")[1].split(",")[0])
        assert netdev == f"user,id=net0,tftp={root},bootfile=tftp://10.0.2.2/{CHAIN_SCRIPT}"
        assert (root / f"tftp:/10.0.2.2/{CHAIN_SCRIPT}").read_bytes() == ipxe_efi.read_bytes()
        assert "\nset cmdline quiet\nchain image/netboot.ipxe\n" in (root / CHAIN_SCRIPT).read_text()
        assert (root / IMAGE_LINK).resolve() == out_dir.resolve()
        assert _devices(launch.command) == ["virtio-net-pci,netdev=net0,bootindex=1,romfile=", "virtio-rng-pci"]
    with prepared_launch(out_dir, BootOptions(via="tftp", uefi=True, accel="tcg", ipxe_efi=ipxe_efi)) as launch:
        netdev = _value(launch.command, "-netdev")
        root = Path(netdev.split("tftp=")[1].split(",")[0])
        assert netdev.endswith(f",bootfile=tftp://10.0.2.2/{IMAGE_LINK}/netboot.ipxe")
        assert (root / f"tftp:/10.0.2.2/{IMAGE_LINK}/netboot.ipxe").read_bytes() == ipxe_efi.read_bytes()
        assert (root / IMAGE_LINK / "netboot.ipxe").read_bytes() == b"#!ipxe\n"  # what iPXE gets by that path


@pytest.fixture
def disc(tmp_path: Path) -> Path:
    """Enough of an ISO for the command line: the ISO 9660 magic where a volume descriptor starts."""
    iso = tmp_path / "a,b.iso"  # a comma, which QEMU's option syntax needs doubled
    iso.write_bytes(bytes(0x8001) + b"CD001" + bytes(2042))
    return iso


def test_disc_commands_boot_the_iso_as_a_cd_or_a_usb_stick(disc: Path) -> None:
    drive = f"if=none,id=disc,format=raw,readonly=on,file={str(disc).replace(',', ',,')}"
    with prepared_launch(disc, BootOptions(via="cdrom", accel="tcg", memory_mib=512)) as launch:
        assert _value(launch.command, "-drive") == f"{drive},media=cdrom"
        assert _devices(launch.command)[:2] == ["ide-cd,drive=disc,bootindex=1", "virtio-net-pci,netdev=net0,romfile="]
    with prepared_launch(disc, BootOptions(via="usb", uefi=True, accel="tcg", memory_mib=512)) as launch:
        drives = [launch.command[i + 1] for i, a in enumerate(launch.command) if a == "-drive"]
        assert drives[-1] == drive and drives[0].startswith("if=pflash")
        assert _devices(launch.command)[:2] == ["qemu-xhci", "usb-storage,drive=disc,bootindex=1"]


@pytest.mark.parametrize(("via", "extra", "message"), [
    ("cdrom", {"append": "quiet"}, "--set, --script and --append are not for --via cdrom"),
    ("direct", {}, "an ISO image; boot it with --via cdrom or --via usb"),
])
def test_disc_options_that_cannot_work_are_refused(disc: Path, via: str, extra: dict[str, str], message: str) -> None:
    with pytest.raises(NetbuildError, match=re.escape(message)):
        boot(disc, BootOptions(via=via, accel="tcg", memory_mib=512, **extra))  # type: ignore[arg-type]


def test_a_directory_is_no_disc(out_dir: Path) -> None:
    with pytest.raises(NetbuildError, match=re.escape(f"{out_dir}: not an ISO image; --via usb boots one")):
        boot(out_dir, BootOptions(via="usb", accel="tcg"))


def test_boot_memory_follows_kernel_initrd_and_twice_the_rootfs() -> None:
    mib = 1 << 20
    # The measured cases of builder/run/memory.py: 51.5 MiB kernel, initrd, 2 × tmpfs, + 10 %.
    assert boot_memory_mib(kernel_init_size=int(51.5 * mib), initrd_bytes=124 * mib, rootfs_bytes=350 * mib) == 992
    assert boot_memory_mib(kernel_init_size=int(51.5 * mib), initrd_bytes=143 * mib, rootfs_bytes=145 * mib) == 560
    assert boot_memory_mib(kernel_init_size=int(51.5 * mib), initrd_bytes=1 * mib, rootfs_bytes=2 * mib) == 128  # floor
    assert boot_memory_mib(kernel_init_size=0, initrd_bytes=0, rootfs_bytes=0) == 128  # unknown kernel: 64 MiB
    assert default_memory_mib(128) == 512 and default_memory_mib(992) == 992
    assert pages(0) == 0 and pages(1) == 4096 and pages(4096) == 4096 and pages(4097) == 8192


@pytest.mark.qemu
def test_accelerator_probe_runs_under_tcg() -> None:
    assert accelerator_runs("qemu-system-x86_64", "tcg") == (True, "")
    works, why = accelerator_runs("qemu-system-x86_64", "no-such-accel")
    assert not works and "no-such-accel" in why
    notes: list[str] = []
    assert choose_accelerator("tcg", "qemu-system-x86_64", notes.append) == "tcg" and notes == []


@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=0-0", (0, 0)), ("bytes=0-", (0, 99)), ("bytes=-1", (99, 99)), ("bytes=-500", (0, 99)),
     ("bytes=90-200", (90, 99)), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=-", None)],
)
def test_parse_range(header: str, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-4", "bytes=-0"])
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)
