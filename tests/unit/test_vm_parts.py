"""The VM layouts' parts that need no Nix or QEMU: their recipes, the stage 1's store scripts, the
run-qemu they render, and the preflight's reading of a kernel configuration."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.checks.vmstore import vm_kernel_problem
from builder.formats.kconfig import parse_config
from builder.recipe import load_recipe
from builder.stage1.archive import store_script
from builder.writers.runqemu import run_qemu_script

BUSYBOX = Path("/bin/busybox")
_9P = {"CONFIG_NET_9P": "m", "CONFIG_NET_9P_VIRTIO": "m", "CONFIG_9P_FS": "m"}
_COMMON = {"CONFIG_VIRTIO_PCI": "y", "CONFIG_OVERLAY_FS": "m", "CONFIG_VIRTIO_BLK": "m", "CONFIG_SQUASHFS": "m"}


def test_vm_recipes_load() -> None:
    nine = load_recipe("vm-9p")
    assert (nine.layout, nine.stage1, nine.squashfs_compression, nine.init_parameter) == ("vm-9p", "auto", None, "init")
    disk = load_recipe("vm-disk")
    assert (disk.layout, disk.stage1, str(disk.squashfs_compression)) == ("vm-disk", "builtin", "zstd:19")
    assert "squashfs_compress" not in nine.settings() and disk.settings()["squashfs_compress"] == "zstd:19"


@pytest.mark.parametrize("layout", ["squashfs", "vm-9p", "vm-disk"])
def test_store_scripts_are_valid_busybox_sh(layout: str, tmp_path: Path) -> None:
    script = tmp_path / "store.sh"
    script.write_bytes(store_script(layout))
    check = subprocess.run([str(BUSYBOX), "sh", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_store_scripts_mount_what_the_layout_brings() -> None:
    assert b"mount_9p nix-store /mnt-root/nix/.ro-store ro,cache=loose" in store_script("vm-9p")
    assert b"disk_with_serial netbuild-store" in store_script("vm-disk")
    assert b"mount_9p nix-store" not in store_script("vm-disk")
    assert b"/nix-store.squashfs" in store_script("squashfs") and b"netbuild.persist" not in store_script("squashfs")


@pytest.mark.parametrize("layout", ["initramfs", "squashfs", "vm-9p", "vm-disk"])
def test_run_qemu_is_valid_bash_and_attaches_the_store(layout: str, tmp_path: Path) -> None:
    text = run_qemu_script(toplevel=None, description="test", boot_mib=128, layout=layout)
    script = tmp_path / "run-qemu"
    script.write_bytes(text)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert (b"mount_tag=nix-store,readonly=on" in text) == (layout == "vm-9p")
    assert (b'"file=${here//,/,,}/store.img,if=none,id=store,format=raw,readonly=on"' in text) == (layout == "vm-disk")
    assert (b"NIX_DISK_IMAGE" in text) == layout.startswith("vm-")


@dataclass(frozen=True)
class _Recipe:
    layout: str


@dataclass(frozen=True)
class _Kernel:
    origin: str


@dataclass(frozen=True)
class _Plan:
    recipe: _Recipe
    kernel: _Kernel


def _problem(layout: str, options: dict[str, str]) -> str | None:
    text = "".join(f"{k}={v}\n" if v != "n" else f"# {k} is not set\n" for k, v in options.items())
    plan = _Plan(_Recipe(layout), _Kernel("/nix/store/x-linux/bzImage"))
    return vm_kernel_problem(plan, parse_config(text, "config"))  # type: ignore[arg-type]


def test_preflight_names_every_option_a_vm_layout_lacks() -> None:
    assert _problem("vm-9p", {**_COMMON, **_9P}) is None
    assert _problem("vm-disk", _COMMON) is None  # no 9p needed for the store disk
    no_9p = _problem("vm-9p", {**_COMMON, "CONFIG_NET_9P": "n"})
    assert no_9p is not None
    assert no_9p.startswith("/nix/store/x-linux/bzImage cannot mount the vm-9p layout's store: CONFIG_NET_9P "
                            "(the 9p protocol), CONFIG_NET_9P_VIRTIO (9p over virtio), CONFIG_9P_FS (the 9p file "
                            "system) are not set in config")
    no_blk = _problem("vm-disk", {**_COMMON, "CONFIG_VIRTIO_BLK": "n"})
    assert no_blk == ("/nix/store/x-linux/bzImage cannot mount the vm-disk layout's store: CONFIG_VIRTIO_BLK (the "
                      "store disk (virtio-blk)) is not set in config")
    assert _problem("squashfs", {"CONFIG_X": "y"}) is None  # not a VM layout: nothing asked
