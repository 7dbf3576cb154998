"""OUT/boot.scr.uimg: the U-Boot script that boots OUT through pxelinux.cfg/default.

U-Boot's distro boot (its `bootcmd` on Debian's qemu_arm64 and on most boards' defaults) tries a
DHCP boot that fetches `boot.scr.uimg` from the TFTP server the DHCP answer names and runs it;
it does not run `pxe` by itself. So the script does: `pxe get` fetches pxelinux.cfg/default (after
the per-MAC and per-IP names, which a site may add beside it), `pxe boot` boots its entry — the
kernel, the initrd and the command line, and the device tree when --dtb chose one. The image
format (a legacy U-Boot image, the same bytes as mkimage's) is builder/formats/uimage.py's.
"""

from __future__ import annotations

from builder.arch import Arch
from builder.formats.uimage import script_image
from builder.outcontract import BOOT_SCR, PXELINUX_CFG

IMAGE_NAME = "netbuild"  # ih_name: what U-Boot prints when it runs the script
# The script's first line on the console: U-Boot 2025's bootstd runs a script without a word of its own.
RUNNING = f"netbuild: {BOOT_SCR} runs pxe get"


def boot_script(*, toplevel: str | None, description: str) -> bytes:
    """boot.cmd, the script's text."""
    return (
        f"# {description}\n"
        f"# Boots {toplevel or 'the closure'} through {PXELINUX_CFG}, over TFTP from the server that\n"
        "# served this script.\n"
        f"echo {RUNNING}\n"
        "pxe get && pxe boot\n"
        f"echo netbuild: booting {PXELINUX_CFG} failed\n"
    ).encode()


def boot_script_image(*, arch: Arch, toplevel: str | None, description: str) -> bytes:
    return script_image(boot_script(toplevel=toplevel, description=description), arch=arch.uboot_arch,
                        name=IMAGE_NAME)
