# vm-disk: OUT/store.img, the closure's squashfs image, which run-qemu attaches read-only as the
# virtio disk with serial netbuild-store, on /nix/.ro-store; the overlay on /nix/store. The image
# holds nix-path-registration beside the store paths, as the squashfs layout's does.
need "the store disk (OUT/store.img)" pci:virtio-pci:CONFIG_VIRTIO_PCI virtio:virtio_blk:CONFIG_VIRTIO_BLK \
    fs:squashfs:CONFIG_SQUASHFS fs:overlay:CONFIG_OVERLAY_FS
mount_root
store_disk=$(disk_with_serial netbuild-store) ||
    fail "no virtio disk has the serial netbuild-store: run OUT/run-qemu, which attaches store.img"
mount -t squashfs -o ro "$store_disk" /mnt-root/nix/.ro-store ||
    fail "cannot mount $store_disk (store.img) (does the kernel support squashfs and its compression?)"
mount_overlay
mount_shares
