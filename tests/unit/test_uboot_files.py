"""U-Boot's files in an arm64 OUT: boot.scr.uimg is byte for byte what mkimage (u-boot-tools, the
independent reference) makes of the same script, reads back with both CRCs checked, and runs
`pxe get` and `pxe boot`; pxelinux.cfg/default names the kernel, initrd, command line and, with
--dtb, the device tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.arch import AARCH64
from builder.formats.uimage import UImageError, read_script, script_image
from builder.writers.pxelinux import pxelinux_config
from builder.writers.uboot_script import IMAGE_NAME, boot_script, boot_script_image


def mkimage_script(script: bytes, tmp: Path) -> bytes:
    (tmp / "boot.cmd").write_bytes(script)
    # SOURCE_DATE_EPOCH: mkimage's time field, which netbuild leaves 0 (the same bytes from every build).
    subprocess.run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", IMAGE_NAME,
                    "-d", str(tmp / "boot.cmd"), str(tmp / "boot.scr.uimg")], check=True, capture_output=True,
                   env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
    return (tmp / "boot.scr.uimg").read_bytes()


def test_the_script_image_is_mkimages(tmp_path: Path) -> None:
    made = boot_script_image(arch=AARCH64, toplevel="/nix/store/" + "a" * 32 + "-system", description="netbuild")
    script = boot_script(toplevel="/nix/store/" + "a" * 32 + "-system", description="netbuild")
    assert made == mkimage_script(script, tmp_path)
    name, read = read_script(made)
    assert name == IMAGE_NAME and read == script
    assert b"\npxe get && pxe boot\n" in read


def test_damage_is_found() -> None:
    made = script_image(b"pxe get && pxe boot\n", arch="arm64", name=IMAGE_NAME)
    with pytest.raises(UImageError, match="the header's CRC"):
        read_script(made[:8] + b"\1" + made[9:])
    with pytest.raises(UImageError, match="the data's CRC"):
        read_script(made[:-1] + b"!")
    with pytest.raises(ValueError, match="at most 31 bytes"):
        script_image(b"", arch="arm64", name="n" * 32)


def test_the_pxelinux_entry() -> None:
    lines = pxelinux_config(kernel="Image", initrd="initrd", cmdline="init=/nix/store/x/init console=ttyAMA0",
                            fdt=None, label="system", description="netbuild").decode().splitlines()
    assert [line.strip() for line in lines if not line.startswith("#")] == [
        "DEFAULT netbuild", "PROMPT 0", "TIMEOUT 0", "LABEL netbuild", "MENU LABEL system", "KERNEL Image",
        "INITRD initrd", "APPEND init=/nix/store/x/init console=ttyAMA0"]
    with_fdt = pxelinux_config(kernel="Image", initrd="initrd", cmdline="c", fdt="devicetree.dtb", label="s",
                               description="d").decode().splitlines()
    assert with_fdt[-1] == "  FDT devicetree.dtb"
