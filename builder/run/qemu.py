"""Boot an OUT directory in QEMU the ways a machine would boot it, and watch the serial console.

- direct: QEMU loads the kernel (bzImage, or an arm64 Image) and initrd itself
  (`-kernel/-initrd/-append "$(cat kernel-params)"`).
- tftp: QEMU's user network serves the directory over TFTP and hands out the script as the DHCP
  boot file; the NIC's iPXE ROM runs DHCP, fetches the script, then the kernel and initrd.
- http: netbuild's own HTTP server (builder.run.serve) on the host's loopback; the DHCP boot file is
  `http://10.0.2.2:PORT/<script>`, 10.0.2.2 being the host as the guest sees it.

An OUT of a VM layout (vm-9p, vm-disk) also gets its store attached, as its run-qemu attaches it
(builder/run/vmstore.py): the host's /nix/store over 9p, or store.img as a virtio disk.

- cdrom, usb: an ISO image (`netbuild iso`) as the machine's CD-ROM drive, or as a USB stick on an
  xHCI controller, first in the boot order; a NIC without a boot ROM, for discs that start iPXE.

- uboot (arm64): U-Boot as the machine's firmware (Debian's u-boot-qemu), QEMU's TFTP serving the
  directory: U-Boot's DHCP boot fetches boot.scr.uimg, whose `pxe get` and `pxe boot` read
  pxelinux.cfg/default and boot the kernel and initrd it names (builder/writers/uboot_script.py).

Each with SeaBIOS (default) or OVMF (UEFI). The machine is the OUT's architecture (builder/arch.py,
from its kernel's name): an arm64 OUT boots on qemu-system-aarch64's `virt` machine, with AAVMF as
its UEFI firmware, always under TCG on another architecture's host.

Extra kernel parameters (--append) reach an iPXE boot
the way a menu would pass them, through iPXE's ${cmdline}: a small chain script, rendered from
ipxe/boot-chain.ipxe, sets it (and any --set variables) and chain-loads the directory's script.

Under UEFI the guest boots as a real UEFI machine does: the firmware's own PXE client (the NIC has
no iPXE option ROM) fetches iPXE for UEFI (the ipxe package's snponly.efi) over TFTP, and that
iPXE fetches the script. Not the NIC's ROM: whether it takes over from the firmware depends on
the ROM's iPXE version (Debian 12's does, Debian 13's leaves the boot to OVMF's PXE client, which
then fetches the script as if it were a program). QEMU's DHCP server hands every client the same
boot file, so that one name must give the firmware an EFI program and iPXE the script: it is an
absolute URL (`tftp://10.0.2.2/netboot.ipxe`, `http://10.0.2.2:PORT/netboot.ipxe`). iPXE reads it
as a URL and fetches the script; the firmware asks QEMU's TFTP server for a file of that literal
name, which the boot's own TFTP root holds: snponly.efi. Newer OVMF (edk2 2024 and later) also
offers network boot only with a random number generator, so the guest gets a virtio-rng device.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from builder.arch import AARCH64, X86_64, Arch
from builder.errors import NetbuildError
from builder.firmware import (
    find_aavmf,
    find_ipxe_snp_efi,
    find_ovmf,
    find_secure_boot_ovmf,
    find_uboot,
    uboot_env_flash,
)
from builder.formats.iso import is_iso
from builder.outcontract import (
    BOOT_SCR,
    INITRD,
    KERNEL_PARAMS,
    NETBOOT_EFI,
    NETBOOT_IPXE,
    PXELINUX_CFG,
    kernel_artifact,
    kernel_in,
)
from builder.run.accel import choose_accelerator
from builder.run.console import ConsoleWatcher, Ending, Outcome
from builder.run.image_memory import boot_memory_of
from builder.run.memory import default_memory_mib
from builder.run.serve import Server
from builder.run.vmstore import out_store_args
from builder.writers.ipxe import chain_script

QEMU = X86_64.qemu  # for an x86 OUT; an arm64 one's is qemu-system-aarch64 (builder/arch.py)
VIAS = ("direct", "tftp", "http", "uefi-http", "uboot", "cdrom", "usb")
IPXE_VIAS = ("tftp", "http")  # through iPXE, which Debian has for x86 alone
DISC_VIAS = ("cdrom", "usb")  # these boot an ISO file rather than an OUT directory
# UEFI HTTP Boot alone: the firmware's PXE boot options would be tried (and time out) first.
_HTTP_BOOT_ONLY = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                   "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
GUEST_HOST = "10.0.2.2"  # the host, as a guest on QEMU's user network reaches it
CHAIN_SCRIPT = "netbuild-boot.ipxe"
IMAGE_LINK = "image"  # the directory, as the chain script's TFTP root names it
DIRECT_FILES = (INITRD, KERNEL_PARAMS)  # and the kernel: what --via direct boots; --via uefi-http boots NETBOOT_EFI
UBOOT_FILES = (BOOT_SCR, PXELINUX_CFG, INITRD)  # and the kernel: what --via uboot fetches
STOP_GRACE_S = 5.0
_SETTING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")

Log = Callable[[str], None]


@dataclass(frozen=True)
class BootOptions:
    via: str = "direct"
    uefi: bool = False
    script: str = NETBOOT_IPXE  # the iPXE script to boot (tftp, http), relative to the directory
    expect: str | None = None
    timeout: float | None = None
    memory_mib: int | None = None  # None: what the image needs to boot, at least 512 (builder.run.memory)
    cpus: int = 1
    append: str = ""
    settings: tuple[tuple[str, str], ...] = ()  # iPXE variables set before the script runs
    qemu_args: tuple[str, ...] = ()
    accel: str = "auto"
    http_port: int = 0  # 0: any free port
    interactive: bool = False  # the terminal types into the guest (and Ctrl-A X quits QEMU)
    qemu: str | None = None  # None: the architecture's (qemu-system-x86_64, qemu-system-aarch64)
    ovmf: tuple[Path, Path] | None = None  # (code, vars template); None: the distribution's
    ipxe_efi: Path | None = None  # iPXE the UEFI firmware loads (tftp, http); None: the distribution's
    secure_boot: bool = False  # UEFI with Secure Boot enforcing (the snakeoil OVMF, unless ovmf is given)

    @property
    def firmware_uefi(self) -> bool:
        return self.uefi or self.via == "uefi-http"


def arch_of(directory: Path) -> Arch:
    """The architecture of the OUT at directory, by the kernel it holds (an ISO is x86's)."""
    if is_iso(directory) or not directory.is_dir():
        return X86_64
    kernel = kernel_in(set(os.listdir(directory)))
    return AARCH64 if kernel == kernel_artifact(AARCH64.name) else X86_64


@dataclass(frozen=True)
class Launch:
    """Everything one boot needs, prepared: the QEMU command and what it relies on."""

    command: list[str]
    accel: str
    server: Server | None = None  # --via http


def boot(
    directory: Path,
    options: BootOptions,
    *,
    console: BinaryIO | None = None,
    errors: BinaryIO | None = None,
    log: Log = lambda _: None,
) -> Outcome:
    """Boot and watch. Returns the Outcome of a good boot (QEMU exited 0, or --expect seen);
    raises NetbuildError, with the reason in one line, for anything else."""
    console = console if console is not None else sys.stdout.buffer
    errors = errors if errors is not None else sys.stderr.buffer
    _check_options(directory, options)
    arch = arch_of(directory)
    qemu = options.qemu or arch.qemu
    needed = boot_memory_of(directory)
    if options.memory_mib is not None and options.memory_mib < needed:
        log(f"warning: --memory {options.memory_mib} MiB is less than the {needed} MiB this image needs to boot "
            "(manifest.json: memory); expect the kernel to fail unpacking the initrd")
    with prepared_launch(directory, options, log=log) as launch:
        firmware = ("UEFI, Secure Boot" if options.secure_boot else "UEFI" if options.firmware_uefi else
                    "U-Boot" if options.via == "uboot" else "BIOS" if arch is X86_64 else "no firmware")
        log(f"booting {directory} via {options.via} ({firmware}, {launch.accel.upper()}, "
            f"{_memory(directory, options)} MiB)")
        log("$ " + " ".join(_shell_quote(a) for a in launch.command))
        try:
            proc = subprocess.Popen(
                launch.command,
                stdin=None if options.interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            raise NetbuildError(f"cannot run {qemu}: {e.strerror}") from None
        try:
            watcher = ConsoleWatcher(proc, sink=console, error_sink=errors, expect=options.expect,
                                     timeout=options.timeout)
            outcome = watcher.watch()
        finally:
            _stop(proc)
        _judge(outcome, options, proc.returncode, watcher.stderr)
        return outcome


def _judge(outcome: Outcome, options: BootOptions, status: int, stderr: bytes) -> None:
    expect = options.expect
    waiting = f" before {expect!r} appeared" if expect is not None else ""
    last = outcome.tail.splitlines()[-1:] or ["(nothing)"]
    context = f"; last console line: {last[0][:200]!r}"
    if outcome.ending is Ending.EXPECTED:
        return
    if outcome.ending is Ending.PANIC:
        raise NetbuildError(f"the kernel panicked{waiting}: {outcome.detail or 'no reason given'}")
    if outcome.ending is Ending.NOTHING_TO_BOOT:
        raise NetbuildError(f"nothing booted{waiting}: the firmware says {outcome.detail!r}")
    if outcome.ending is Ending.TIMEOUT:
        raise NetbuildError(f"timed out after {options.timeout:g} s{waiting}" + context)
    # Ending.EXITED
    if status != 0:
        err_lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        why = err_lines[-1].strip() if err_lines else f"exit status {status}"
        raise NetbuildError(f"QEMU failed (status {status}){waiting}: {why}")
    if expect is not None:
        raise NetbuildError(f"the guest stopped (QEMU exited){waiting}" + context)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: QEMU restores the terminal it may have put in raw mode
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _check_options(directory: Path, options: BootOptions) -> None:
    if options.via not in VIAS:
        raise NetbuildError(f"--via {options.via!r}: choose one of {', '.join(VIAS)}")
    if options.via in DISC_VIAS:
        if not is_iso(directory):
            raise NetbuildError(f"{directory}: not an ISO image; --via {options.via} boots one (netbuild iso)")
        if options.settings or options.script != NETBOOT_IPXE or options.append.strip():
            raise NetbuildError(f"--set, --script and --append are not for --via {options.via}: the disc boots "
                                "with the command line written on it")
        return
    if is_iso(directory):
        raise NetbuildError(f"{directory}: an ISO image; boot it with --via cdrom or --via usb")
    if not directory.is_dir():
        raise NetbuildError(f"{directory}: not a directory")
    if options.secure_boot and not options.firmware_uefi:
        raise NetbuildError("--secure-boot is UEFI's: add --uefi, or --via uefi-http")
    if options.via == "uefi-http":
        if not (directory / NETBOOT_EFI).is_file():
            raise NetbuildError(f"{directory / NETBOOT_EFI}: missing; --via uefi-http boots it (build with --uki)")
        if options.settings or options.script != NETBOOT_IPXE:
            raise NetbuildError(f"--set and --script are iPXE's: --via uefi-http boots {NETBOOT_EFI} without iPXE")
        if options.append.strip():
            raise NetbuildError(f"--append: the firmware hands {NETBOOT_EFI} no command line; build it with --append")
    elif options.via in ("direct", "uboot"):
        kernel = kernel_artifact(arch_of(directory).name)
        needs = (kernel, *(DIRECT_FILES if options.via == "direct" else UBOOT_FILES))
        for name in needs:
            if not (directory / name).is_file():
                raise NetbuildError(f"{directory / name}: missing; --via {options.via} boots {', '.join(needs)}")
        if options.settings:
            raise NetbuildError("--set sets iPXE variables: it needs --via tftp or --via http")
        if options.script != NETBOOT_IPXE:
            raise NetbuildError("--script names the iPXE script to boot: it needs --via tftp or --via http")
        if options.via == "uboot":
            if arch_of(directory) is not AARCH64:
                raise NetbuildError(f"--via uboot boots an arm64 OUT (Debian's u-boot-qemu); {directory} is "
                                    f"{arch_of(directory).name}'s")
            if options.uefi or options.append.strip():
                raise NetbuildError("--uefi and --append are not for --via uboot: U-Boot is the firmware, and "
                                    f"{PXELINUX_CFG} holds the command line")
    else:
        if arch_of(directory) is not X86_64:
            raise NetbuildError(f"--via {options.via} boots through iPXE, which Debian has for x86 only; boot "
                                f"{directory} with --via direct, uefi-http or uboot")
        if Path(options.script).is_absolute() or ".." in Path(options.script).parts:
            raise NetbuildError(f"--script {options.script}: must be a path inside {directory}")
        script = directory / options.script
        if not script.is_file():
            raise NetbuildError(f"{script}: missing; --via {options.via} boots this iPXE script (see --script)")
    for name, value in options.settings:
        if not _SETTING_NAME.fullmatch(name):
            raise NetbuildError(f"--set {name}=…: not an iPXE setting name")
        if "\n" in value or "\r" in value:
            raise NetbuildError(f"--set {name}=…: the value must be one line")
    if "\n" in options.append:
        raise NetbuildError("--append: kernel parameters must be one line")


@contextmanager
def prepared_launch(directory: Path, options: BootOptions, *, log: Log = lambda _: None) -> Iterator[Launch]:
    """The QEMU command for `options`, with its temporary files and HTTP server alive while in use."""
    directory = directory.resolve()
    arch = arch_of(directory)
    qemu = options.qemu or arch.qemu
    if shutil.which(qemu) is None:
        raise NetbuildError(f"{qemu} not found; install QEMU (Debian: {arch.debian_qemu})")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="netbuild-boot-")))
        # KVM runs a guest of the host's own architecture only: another one is emulated (TCG).
        native = arch.name == platform.machine()
        accel = choose_accelerator(options.accel, qemu, log) if native or options.accel != "auto" else "tcg"
        command = [qemu, "-accel", accel, *arch.qemu_machine, *_machine(options, directory, tmp, arch)]
        server = None
        if options.via == "uefi-http":
            server = _serve(stack, directory, options, log)
            url = f"http://{GUEST_HOST}:{server.port}/{NETBOOT_EFI}"
            log(f"serving {directory} at {server.url} (the firmware's HTTP Boot fetches {url})")
            # QEMU's DHCP hands out the URL; a UEFI HTTP Boot client takes it from there, no iPXE.
            command += [*_network(None, url, boot=True, option_rom=False), *_HTTP_BOOT_ONLY]
        elif options.via in DISC_VIAS:
            drive = f"if=none,id=disc,format=raw,readonly=on,file={_qemu_option_value(str(directory))}"
            if options.via == "cdrom":
                command += ["-drive", f"{drive},media=cdrom", "-device", "ide-cd,drive=disc,bootindex=1"]
            else:
                command += ["-device", "qemu-xhci", "-drive", drive, "-device", "usb-storage,drive=disc,bootindex=1"]
            # The network for a disc that starts iPXE; no boot ROM, so that a disc that does not boot
            # is a failure rather than a network boot.
            command += _network(None, None, boot=False, option_rom=False)
        elif options.via == "uboot":
            # U-Boot's DHCP boot target fetches boot.scr.uimg from the TFTP server: the directory.
            uboot = find_uboot()
            env = uboot_env_flash(uboot, tmp)  # the board's saved environment (builder/firmware.py)
            command += ["-bios", str(uboot), "-drive", f"if=pflash,format=raw,unit=1,file={env}",
                        *_network(directory, BOOT_SCR, boot=False, option_rom=False)]
        elif options.via == "direct":
            command += _network(None, None, boot=False)
            params = (directory / KERNEL_PARAMS).read_text(encoding="utf-8").strip()
            command += ["-kernel", str(directory / kernel_artifact(arch.name)), "-initrd", str(directory / INITRD),
                        "-append", " ".join(p for p in (params, options.append.strip()) if p)]
        else:
            script_url = "/".join(quote(part) for part in Path(options.script).parts)
            if options.via == "http":
                server = _serve(stack, directory, options, log)
                target = f"http://{GUEST_HOST}:{server.port}/{script_url}"
                log(f"serving {directory} at {server.url} (the guest's {target})")
            else:
                target = script_url
            settings = _settings(options)
            tftp_root = directory if options.via == "tftp" else None
            if settings or options.uefi:
                # A root of our own: the directory as IMAGE_LINK, the chain script, the UEFI loader.
                tftp_root = tmp / "tftp"
                tftp_root.mkdir()
                if options.via == "tftp":
                    (tftp_root / IMAGE_LINK).symlink_to(directory)
                    target = f"{IMAGE_LINK}/{target}"
                if settings:
                    (tftp_root / CHAIN_SCRIPT).write_bytes(chain_script(target=target, settings=settings))
                    target = CHAIN_SCRIPT
                if options.uefi:
                    target = _uefi_boot_file(tftp_root, target, options.ipxe_efi or find_ipxe_snp_efi())
            command += _network(tftp_root, target, boot=True, option_rom=not options.uefi)
        if options.via not in DISC_VIAS:
            command += out_store_args(directory)  # the VM layouts' store: builder/run/vmstore.py
        command += list(options.qemu_args)
        yield Launch(command=command, accel=accel, server=server)


def _serve(stack: ExitStack, directory: Path, options: BootOptions, log: Log) -> Server:
    """netbuild's HTTP server for the directory on the host's loopback, running while stack lasts."""
    server = Server([directory], bind="127.0.0.1", port=options.http_port, log=lambda m: log(f"http: {m}"))
    return stack.enter_context(server).start()


def _settings(options: BootOptions) -> list[tuple[str, str]]:
    settings = list(options.settings)
    if options.append.strip():
        settings.append(("cmdline", options.append.strip()))  # netboot.ipxe ends its kernel line with ${cmdline}
    return settings


def _machine(options: BootOptions, directory: Path, tmp: Path, arch: Arch = X86_64) -> list[str]:
    args = [
        "-m", str(_memory(directory, options)),
        "-smp", str(options.cpus),
        "-no-reboot",  # a reboot (panic=-1, a failed boot) ends QEMU instead of looping
        "-display", "none",
        "-monitor", "none",
        "-serial", "mon:stdio" if options.interactive else "stdio",
    ]
    if options.firmware_uefi:
        if options.secure_boot and arch is not X86_64:
            raise NetbuildError("--secure-boot: Debian's Secure Boot test firmware is x86's (OVMF); AAVMF has none")
        firmware = find_aavmf if arch is AARCH64 else find_secure_boot_ovmf if options.secure_boot else find_ovmf
        code, vars_template = options.ovmf or firmware()
        if options.secure_boot:
            # The firmware keeps its variables (the enrolled keys) in SMM: q35 with SMM and a secure flash.
            args += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
        variables = tmp / "OVMF_VARS.fd"  # the firmware writes its variables: never the shared template
        shutil.copyfile(vars_template, variables)
        args += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={variables}"]
    elif arch is X86_64:
        args += ["-machine", "graphics=off"]  # SeaBIOS and iPXE write to the serial console too
    return args


def _uefi_boot_file(tftp_root: Path, target: str, ipxe_efi: Path) -> str:
    """The DHCP boot file for a UEFI network boot of `target` (a path in tftp_root, or an http URL):
    an absolute URL, which iPXE fetches, and under whose literal name tftp_root holds `ipxe_efi`
    for the firmware's PXE client (see the module's docstring)."""
    url = target if "://" in target else f"tftp://{GUEST_HOST}/{target}"
    loader = tftp_root / url  # QEMU's TFTP server reads "tftp://h/p" as the path tftp:/h/p
    loader.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ipxe_efi, loader)
    return url


def _network(tftp_root: Path | None, bootfile: str | None, *, boot: bool, option_rom: bool = True) -> list[str]:
    netdev = "user,id=net0"
    if tftp_root is not None:
        netdev += f",tftp={_qemu_option_value(str(tftp_root))}"
    if bootfile is not None:
        netdev += f",bootfile={_qemu_option_value(bootfile)}"
    device = "virtio-net-pci,netdev=net0" + (",bootindex=1" if boot else "") + ("" if option_rom else ",romfile=")
    args = ["-netdev", netdev, "-device", device]
    if not option_rom:
        args += ["-device", "virtio-rng-pci"]  # newer OVMF offers network boot only with an RNG
    return args


def _qemu_option_value(value: str) -> str:
    return value.replace(",", ",,")  # QEMU's option syntax doubles a comma inside a value


def _memory(directory: Path, options: BootOptions) -> int:
    if options.memory_mib is not None:
        return options.memory_mib
    return default_memory_mib(boot_memory_of(directory))


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[A-Za-z0-9_./:=,+@%-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"
