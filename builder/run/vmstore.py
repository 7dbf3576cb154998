"""The VM layouts' store as QEMU attaches it: one definition for OUT/run-qemu and `netbuild boot`.

    vm-9p    -virtfs local,path=/nix/store,security_model=none,mount_tag=nix-store,readonly=on
             the host's store, read-only, under qemu-vm.nix's tag (a NixOS stage 1 built for
             qemu-vm.nix mounts the same tag on /nix/.ro-store)
    vm-disk  -drive file=OUT/store.img,if=none,id=store,format=raw,readonly=on
             -device virtio-blk-pci,drive=store,serial=netbuild-store

The guest's stage 1 finds a disk by its serial (builder/stage1/store-vm.sh), so the store disk and
NIX_DISK_IMAGE's (serial netbuild-root) may come in any order. run-qemu adds the persistence disk
and the shares itself (builder/run/run-qemu-vm.sh): they are its environment's, not OUT's.
"""

from __future__ import annotations

from pathlib import Path

from builder.closure import STORE_DIR
from builder.outcontract import STORE_IMG, ManifestError, read_manifest

STORE_TAG = "nix-store"  # qemu-vm.nix's mount tag for the host's store
STORE_SERIAL = "netbuild-store"
ROOT_SERIAL = "netbuild-root"  # NIX_DISK_IMAGE's disk


def store_qemu_args(layout: str, out: str) -> list[str]:
    """QEMU's arguments attaching the layout's store; `out` is OUT's directory as a QEMU option value
    (commas doubled). None for the layouts whose store is in the initrd."""
    if layout == "vm-9p":
        return ["-virtfs", f"local,path={STORE_DIR},security_model=none,mount_tag={STORE_TAG},readonly=on"]
    if layout == "vm-disk":
        return ["-drive", f"file={out}/{STORE_IMG},if=none,id=store,format=raw,readonly=on",
                "-device", f"virtio-blk-pci,drive=store,serial={STORE_SERIAL}"]
    return []


def out_store_args(directory: Path) -> list[str]:
    """What `netbuild boot` adds to boot an OUT of a VM layout (its manifest says which); nothing for
    the others, or for a directory netbuild did not write."""
    try:
        layout = read_manifest(directory).layout
    except ManifestError:
        return []
    return store_qemu_args(layout or "", str(directory).replace(",", ",,"))
