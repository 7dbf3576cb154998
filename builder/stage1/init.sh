#!/bin/busybox sh
# netbuild's built-in stage 1 (from builder/stage1/init.sh; netbuild fills in the @…@ values).
#
# It does what a NixOS netboot stage 1 does: load the modules the layout needs, mount the store
# read-only on /nix/.ro-store (the squashfs layout: /nix-store.squashfs in this initramfs; vm-9p: the
# host's store over 9p; vm-disk: a virtio disk), put a writable layer on /nix/.rw-store and an
# overlay of the two on /nix/store, all under a new root, then switch to that root and run init=
# from the kernel command line. Kernel parameters it understands besides init=:
#
#   netbuild.run=PROGRAM   run one program of the closure (no switch of root; PID 1 stays here),
#   netbuild.run="PROGRAM ARG…"   print its exit status, power off;
#   netbuild.shell         an interactive shell (on the console) with the store mounted; power off
#                          when it exits. With netbuild.run too, the shell comes after the program.
#
# A failure prints one `netbuild stage 1: error: …` line and exits, which makes the kernel panic:
# panic=N on the command line then decides between rebooting and waiting.

/bin/busybox mkdir -p /bin /proc /sys /dev /run /tmp /mnt-root
/bin/busybox --install -s /bin
export PATH=/bin HOME=/
set -f  # the command line is split into words below; never expand them as file names

say() { echo "netbuild stage 1: $*"; }
fail() { say "error: $*"; exit 1; }

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "cannot mount /run"

# The kernel keeps quotes in /proc/cmdline: netbuild.run="a b" arrives as the words "a and b".
init= shell= run= in_run=
for word in $(cat /proc/cmdline); do
    if [ -n "$in_run" ]; then
        run="$run ${word%\"}"
        case $word in *\") in_run= ;; esac
        continue
    fi
    case $word in
        init=*) init=${word#init=} ;;
        netbuild.shell) shell=1 ;;
        netbuild.run=\"*\") run=${word#netbuild.run=\"}; run=${run%\"} ;;
        netbuild.run=\"*) run=${word#netbuild.run=\"}; in_run=1 ;;
        netbuild.run=*) run=${word#netbuild.run=} ;;
    esac
done

# Dependencies first; built-in ones are not listed. Resolved by netbuild from the modules' .modinfo.
# A module that finds no hardware of its kind (ENODEV: crc32c-intel on a CPU without SSE4.2, which a
# softdep may bring) is skipped, as modprobe skips it; any other failure stops the boot.
for module in @modules@; do
    error=$(insmod "/lib/modules/@release@/$module" 2>&1) || case $error in
        *"No such device"*) ;;
        *) echo "$error"; fail "cannot load kernel module $module" ;;
    esac
done

# The store, as the layout brings it (builder/stage1/store-<layout>.sh, chosen at build time): the
# new root on /mnt-root, with the store on /mnt-root/nix/store.
. /lib/netbuild/store.sh

if [ -n "$run" ] || [ -n "$shell" ]; then
    # Stay in this root, where BusyBox is, and see the store at the same path as in the new root.
    mkdir -p /nix/store
    mount --bind /mnt-root/nix/store /nix/store || fail "cannot bind /nix/store"
    if [ -n "$run" ]; then
        say "running $run"
        $run
        status=$?
        echo "netbuild.run: exit status $status"
    fi
    if [ -n "$shell" ]; then
        say "netbuild.shell: a shell with the store on /nix/store; exit it to power off"
        # A prompt of our own: BusyBox's default differs between versions ('/ # ' in 1.35, '~ # ' in 1.37).
        export PS1='netbuild.shell # '
        if command -v cttyhack >/dev/null; then setsid cttyhack sh; else sh; fi
    fi
    sync
    poweroff -f
    exit 0  # poweroff -f does not return; if it ever did, the kernel's panic= decides
fi

[ -n "$init" ] || fail "no init= on the kernel command line"
for dir in dev proc sys run; do
    mkdir -p "/mnt-root/$dir"
    mount --move "/$dir" "/mnt-root/$dir" || fail "cannot move /$dir into the new root"
done
say "the store is mounted; switching to $init"
exec switch_root /mnt-root "$init"
