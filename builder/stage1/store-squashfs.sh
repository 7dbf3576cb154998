# The squashfs layout's store (sourced by the stage 1's /init): /nix-store.squashfs, which the
# initrd holds, loop-mounted on /nix/.ro-store under a tmpfs root, a tmpfs on /nix/.rw-store, an
# overlay of the two on /nix/store.
[ -f /nix-store.squashfs ] || fail "no /nix-store.squashfs in the initrd"
mount -t tmpfs -o mode=0755 tmpfs /mnt-root || fail "cannot mount the root tmpfs"
mkdir -p /mnt-root/nix/.ro-store /mnt-root/nix/.rw-store /mnt-root/nix/store
mount -t squashfs -o loop,ro /nix-store.squashfs /mnt-root/nix/.ro-store ||
    fail "cannot mount /nix-store.squashfs (does the kernel support squashfs and its compression?)"
mount -t tmpfs -o mode=0755 tmpfs /mnt-root/nix/.rw-store || fail "cannot mount /nix/.rw-store"
mkdir -p /mnt-root/nix/.rw-store/store /mnt-root/nix/.rw-store/work
mount -t overlay overlay \
    -o lowerdir=/mnt-root/nix/.ro-store,upperdir=/mnt-root/nix/.rw-store/store,workdir=/mnt-root/nix/.rw-store/work \
    /mnt-root/nix/store || fail "cannot mount the overlay on /nix/store"

