"""What each stage-1 layout needs from the kernel: modules to load, and the options that must be set.

    layout     the store                               required                         optional
    squashfs   /nix-store.squashfs in the initrd       loop, squashfs, overlay          —
    vm-9p      the host's /nix/store over virtio-9p    virtio_pci, 9p, 9pnet_virtio,    virtio_blk, ext4
                                                       overlay                          (NIX_DISK_IMAGE)
    vm-disk    OUT/store.img on a virtio disk          virtio_pci, virtio_blk,          ext4 (NIX_DISK_IMAGE),
                                                       squashfs, overlay                9p, 9pnet_virtio (shares)

A required module that is neither in the modules tree nor built in refuses the build (as the squashfs
layout always has); an optional one is shipped when the tree has it and otherwise left out, and the
stage 1 says on the console, in one line, what is missing when a run asks for it (a persistence disk,
a share). The dependencies of either (netfs, 9pnet, jbd2, …) come from their .modinfo
(builder/stage1/modules.py).

The kernel options are what the preflight reads in the kernel's configuration (checks/vmstore.py):
an option that is not set at all (neither =y nor =m) means the layout cannot work with that kernel,
as with Debian's cloud kernel and 9p (`# CONFIG_NET_9P is not set`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayoutNeeds:
    required: tuple[str, ...]  # modules, in the order the stage 1 uses them
    optional: tuple[str, ...]
    options: tuple[tuple[str, str], ...]  # (CONFIG_…, what it is for), every one needed


# What the squashfs layout's stage 1 mounts with, in the order it uses them.
STAGE1_MODULES = ("loop", "squashfs", "overlay")
_VIRTIO = (("CONFIG_VIRTIO_PCI", "virtio devices on QEMU's PCI bus"),)
_OVERLAY = (("CONFIG_OVERLAY_FS", "the writable overlay on /nix/store"),)
_9P = (("CONFIG_NET_9P", "the 9p protocol"), ("CONFIG_NET_9P_VIRTIO", "9p over virtio"),
       ("CONFIG_9P_FS", "the 9p file system"))

NEEDS: dict[str, LayoutNeeds] = {
    "squashfs": LayoutNeeds(required=STAGE1_MODULES, optional=(), options=()),
    "vm-9p": LayoutNeeds(
        required=("virtio_pci", "9p", "9pnet_virtio", "overlay"),
        optional=("virtio_blk", "ext4"),
        options=(*_VIRTIO, *_9P, *_OVERLAY),
    ),
    "vm-disk": LayoutNeeds(
        required=("virtio_pci", "virtio_blk", "squashfs", "overlay"),
        optional=("ext4", "9p", "9pnet_virtio"),
        options=(*_VIRTIO, ("CONFIG_VIRTIO_BLK", "the store disk (virtio-blk)"),
                 ("CONFIG_SQUASHFS", "the store image's file system"), *_OVERLAY),
    ),
}


