"""The machine architectures netbuild packs for, and everything that differs between them in one
record: the names the closure gives them (its toplevel's `system`, its programs' ELF e_machine, its
kernel image's format), what their kernel can execute, where their C library looks for libraries,
their UEFI names, and how QEMU emulates one.

The architecture is the closure's, never the host's: an x86-64 machine packs an arm64 closure (Nix
can only build a closure for the machine it runs on, or through a remote builder; netbuild reads
a finished one, so it needs neither). The kernel image decides it (builder/formats/kernel.py);
the toplevel's `system` and init's ELF header must agree, which the preflight checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # uname -m, and the name in every message: "x86_64", "aarch64"
    nix_system: str  # a NixOS toplevel's `system` file and boot.json's "system"
    elf_machines: tuple[str, ...]  # pyelftools' e_machine names its kernel can execute
    library_dirs: tuple[str, ...]  # where glibc's loader looks last (no /etc/ld.so.cache in a store image)
    pe_machine: str  # builder/formats/pe.py's name of a UEFI program's machine
    efi_stub: str  # systemd-stub's file name (a UKI's base), in systemd's lib/systemd/boot/efi/
    uboot_arch: str  # the legacy U-Boot image header's architecture (mkimage -A), builder/writers/uboot_script.py
    qemu: str  # the QEMU system emulator
    qemu_machine: tuple[str, ...]  # its machine and CPU, before memory and devices
    debian_qemu: str  # the Debian package with `qemu`, for the message when it is missing
    # Its OUT also has pxelinux.cfg/default and boot.scr.uimg: U-Boot is how arm64 boards netboot
    # (Debian has no arm64 iPXE). An x86 OUT keeps to netboot.ipxe, as it always has.
    uboot_files: bool = False


X86_64 = Arch(
    name="x86_64",
    nix_system="x86_64-linux",
    elf_machines=("EM_X86_64", "EM_386"),  # i386 through IA32 emulation
    # Debian's multiarch directories first.
    library_dirs=("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"),
    pe_machine="x86_64",
    efi_stub="linuxx64.efi.stub",
    uboot_arch="x86_64",
    qemu="qemu-system-x86_64",
    qemu_machine=(),  # QEMU's default PC; OVMF and SeaBIOS both run on it
    debian_qemu="qemu-system-x86",
)

AARCH64 = Arch(
    name="aarch64",
    qemu="qemu-system-aarch64",
    # virt: the generic machine AAVMF and U-Boot's qemu_arm64 are built for. TCG's default CPU for
    # virt is a 32-bit cortex-a15; "max" (every feature TCG emulates) rather than a cortex-a57,
    # because AAVMF 2025 (Debian 13) offers network boot only with an EFI_RNG_PROTOCOL, which on
    # this machine comes from the CPU's RNDR instruction (Armv8.5; it has no virtio-rng driver):
    # with a cortex-a57 it boots its shell instead. pauth-impdef: pointer authentication with
    # QEMU's cheap hash instead of QARMA, which costs TCG several times the boot time.
    # Its console is ttyAMA0 (a PL011 UART).
    qemu_machine=("-machine", "virt", "-cpu", "max,pauth-impdef=on"),
    debian_qemu="qemu-system-arm",
    nix_system="aarch64-linux",
    elf_machines=("EM_AARCH64",),  # 32-bit ARM programs need COMPAT, which cloud kernels lack: not counted
    efi_stub="linuxaa64.efi.stub",
    library_dirs=("/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"),
    pe_machine="aarch64",
    uboot_arch="arm64",
    uboot_files=True,
)

ARCHES = (X86_64, AARCH64)


def by_nix_system(system: str) -> Arch | None:
    return next((a for a in ARCHES if a.nix_system == system), None)


def by_elf_machine(machine: str) -> Arch | None:
    return next((a for a in ARCHES if machine in a.elf_machines), None)


def by_name(name: str) -> Arch | None:
    return next((a for a in ARCHES if a.name == name), None)
