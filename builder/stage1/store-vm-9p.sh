# vm-9p: the host's /nix/store, which run-qemu shares read-only over 9p with the tag nix-store
# (qemu-vm.nix's), on /nix/.ro-store; the overlay on /nix/store; the closure's registration, which
# the initrd holds, at /nix/store/nix-path-registration for `nix-store --load-db`. The guest sees the
# whole host store, as under qemu-vm.nix; its writes stay in the overlay's upper layer.
need "the host's store over 9p" pci:virtio-pci:CONFIG_VIRTIO_PCI virtio:9pnet_virtio:CONFIG_NET_9P_VIRTIO \
    fs:9p:CONFIG_9P_FS fs:overlay:CONFIG_OVERLAY_FS
[ -f /nix-path-registration ] || fail "no /nix-path-registration in the initrd"
mount_root
# cache=loose: the host's store paths never change while they exist, so the guest may cache them.
mount_9p nix-store /mnt-root/nix/.ro-store ro,cache=loose ||
    fail "cannot mount the host's store (9p tag nix-store): run OUT/run-qemu, which shares it"
mount_overlay
cp /nix-path-registration /mnt-root/nix/store/nix-path-registration ||
    fail "cannot write /nix/store/nix-path-registration"
mount_shares
