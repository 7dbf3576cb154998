"""OUT/pxelinux.cfg/default: one entry booting OUT's kernel and initrd with its command line, in
PXELINUX's syntax, which U-Boot's `pxe` command reads (boot.scr.uimg runs it) and PXELINUX itself
reads on x86.

File names are relative: PXELINUX and U-Boot's `pxe` both fetch them from the TFTP directory the
boot file came from (OUT), not from pxelinux.cfg/. `fdt` names the device tree when --dtb chose
one (OUT/devicetree.dtb); without it U-Boot hands the kernel the tree the firmware has (QEMU's
virt machine makes one; a board's U-Boot has its own).
"""

from __future__ import annotations

LABEL = "netbuild"


def pxelinux_config(*, kernel: str, initrd: str, cmdline: str, fdt: str | None, label: str, description: str) -> bytes:
    lines = [
        f"# {description}",
        f"# {label}",
        f"DEFAULT {LABEL}",
        "PROMPT 0",
        "TIMEOUT 0",
        f"LABEL {LABEL}",
        f"  MENU LABEL {label}",
        f"  KERNEL {kernel}",
        f"  INITRD {initrd}",
        f"  APPEND {cmdline}",
    ]
    if fdt is not None:
        lines.append(f"  FDT {fdt}")
    return ("\n".join(lines) + "\n").encode()
