"""U-Boot's environment (builder/formats/ubootenv.py): the default one read from Debian's own
qemu_arm64 U-Boot, and the flash image written the way mkenvimage writes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.firmware import UBOOT_ENV_SIZE, find_uboot
from builder.formats.ubootenv import UbootEnvError, default_environment, environment_image


def test_the_default_environment_of_debians_uboot() -> None:
    entries = default_environment(find_uboot().read_bytes())
    assert next(iter(entries)) == "bootcmd"  # the block's first entry, as U-Boot's env_default.h has it
    # What `pxe get` and the DHCP script need, at the addresses of QEMU's virt memory map.
    assert entries["scriptaddr"] == "0x40200000" and entries["pxefile_addr_r"] == "0x40300000"
    assert entries["kernel_addr_r"] == "0x40400000" and entries["ramdisk_addr_r"] == "0x44000000"
    assert all("\0" not in value for value in entries.values())


def test_the_image_is_what_mkenvimage_writes(tmp_path: Path) -> None:
    entries = {**default_environment(find_uboot().read_bytes()), "boot_script_dhcp": "boot.scr.uimg"}
    (tmp_path / "env.txt").write_text("".join(f"{name}={value}\n" for name, value in entries.items()))
    subprocess.run(["mkenvimage", "-s", str(UBOOT_ENV_SIZE), "-p", "0", "-o", str(tmp_path / "env.bin"),
                    str(tmp_path / "env.txt")], check=True)
    assert environment_image(entries, UBOOT_ENV_SIZE) == (tmp_path / "env.bin").read_bytes()


def test_refusals() -> None:
    with pytest.raises(UbootEnvError, match="no default environment"):
        default_environment(b"\0" * 1024)
    with pytest.raises(UbootEnvError, match="more than its 64"):
        environment_image({"a": "x" * 100}, 64)
    with pytest.raises(UbootEnvError, match="not a U-Boot environment entry"):
        environment_image({"a=b": "c"}, 4096)
