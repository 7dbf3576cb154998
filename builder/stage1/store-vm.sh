# What the VM layouts' stores share (sourced by the stage 1's /init before store-vm-9p.sh or
# store-vm-disk.sh): the root, on the persistence disk or in RAM; the writable overlay on the store;
# the host directories shared over 9p. OUT/run-qemu asks for them with kernel parameters:
#
#   netbuild.persist             NIX_DISK_IMAGE is attached, as the virtio disk with serial netbuild-root:
#                                the root (and so /nix/.rw-store, the store's writable layer) is on it,
#                                formatted ext2 by BusyBox's mke2fs on first use (when it is blank)
#   netbuild.share=TAG:PATH[:ro] a 9p share (NETBUILD_SHARES) to mount on PATH in the new root
#
# The disks are found by their virtio serial (/sys/block/vd*/serial), not by their order.
persist= shares=
for word in $(cat /proc/cmdline); do
    case $word in
        netbuild.persist) persist=1 ;;
        netbuild.share=*) shares="$shares ${word#netbuild.share=}" ;;
    esac
done

# need WHAT ITEM…: fail, in one line naming everything missing, unless the kernel has each ITEM, one of
# fs:NAME:OPTION (a file system in /proc/filesystems), virtio:NAME:OPTION (a virtio driver),
# pci:NAME:OPTION (a PCI driver); OPTION is the kernel configuration that provides it.
need() {
    what=$1 missing=
    shift
    for item in "$@"; do
        kind=${item%%:*} rest=${item#*:}
        name=${rest%%:*} option=${rest#*:}
        case $kind in
            fs) grep -q "[[:space:]]$name\$" /proc/filesystems ;;
            virtio) [ -d "/sys/bus/virtio/drivers/$name" ] ;;
            pci) [ -d "/sys/bus/pci/drivers/$name" ] ;;
        esac || missing="$missing${missing:+, }$name ($option)"
    done
    [ -z "$missing" ] ||
        fail "$what needs $missing, which this kernel has neither built in nor loaded from the stage 1's modules"
}

# The /dev node of the virtio disk with this serial, waiting a few seconds for it to appear.
disk_with_serial() {
    tries=0
    while [ "$tries" -lt 10 ]; do
        for name in $(ls /sys/block); do  # ls, not a glob: /init turned globbing off (set -f)
            case $name in vd*) ;; *) continue ;; esac
            if [ "$(cat "/sys/block/$name/serial" 2>/dev/null)" = "$1" ]; then
                echo "/dev/$name"
                return 0
            fi
        done
        tries=$((tries + 1))
        sleep 1
    done
    return 1
}

mount_root() {
    if [ -n "$persist" ]; then
        need "the persistence disk (NIX_DISK_IMAGE)" pci:virtio-pci:CONFIG_VIRTIO_PCI \
            virtio:virtio_blk:CONFIG_VIRTIO_BLK fs:ext4:CONFIG_EXT4_FS
        root_disk=$(disk_with_serial netbuild-root) ||
            fail "netbuild.persist, but no virtio disk has the serial netbuild-root (NIX_DISK_IMAGE)"
        # ext2/3/4 keep the magic 0xEF53 at byte 1080; a disk without it is formatted only when it is
        # blank (qemu-img's new image reads as zeros), never when it holds something else.
        magic=$(dd if="$root_disk" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
        if [ "$magic" != 53ef ]; then
            [ -z "$(dd if="$root_disk" bs=65536 count=16 2>/dev/null | tr -d '\000' | head -c 1)" ] ||
                fail "$root_disk (NIX_DISK_IMAGE) holds something that is not an ext2/3/4 file system; not formatting it"
            say "formatting $root_disk (NIX_DISK_IMAGE's first run)"
            mke2fs -L netbuild-root "$root_disk" >/dev/null || fail "cannot format $root_disk"
        fi
        # The ext4 driver mounts ext2 too (Debian's kernels: CONFIG_EXT4_USE_FOR_EXT2).
        mount -t ext4 "$root_disk" /mnt-root || fail "cannot mount $root_disk (NIX_DISK_IMAGE) on the root"
        say "the root is on $root_disk (NIX_DISK_IMAGE): writes under / and /nix/store are kept"
    else
        mount -t tmpfs -o mode=0755 tmpfs /mnt-root || fail "cannot mount the root tmpfs"
    fi
    mkdir -p /mnt-root/nix/.ro-store /mnt-root/nix/.rw-store/store /mnt-root/nix/.rw-store/work /mnt-root/nix/store
}

mount_overlay() {
    mount -t overlay overlay \
        -o lowerdir=/mnt-root/nix/.ro-store,upperdir=/mnt-root/nix/.rw-store/store,workdir=/mnt-root/nix/.rw-store/work \
        /mnt-root/nix/store || fail "cannot mount the overlay on /nix/store"
}

# trans=virtio, 9p2000.L as qemu-vm.nix mounts its shares; msize 256 KiB: the default 8 KiB makes
# every large read hundreds of round trips.
mount_9p() {
    mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$1" "$2"
}

mount_shares() {
    for share in $shares; do
        tag=${share%%:*} target=${share#*:} mode=rw
        case $target in *:ro) target=${target%:ro} mode=ro ;; esac
        need "the share $target (NETBUILD_SHARES)" virtio:9pnet_virtio:CONFIG_NET_9P_VIRTIO fs:9p:CONFIG_9P_FS
        mkdir -p "/mnt-root$target" || fail "cannot make the share's mount point $target"
        mount_9p "$tag" "/mnt-root$target" "$mode" || fail "cannot mount the share $tag on $target"
        say "share $tag on $target ($mode)"
    done
}
