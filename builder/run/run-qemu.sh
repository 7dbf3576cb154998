#!/usr/bin/env bash
# run-qemu: boot the netbuild output beside this script in QEMU, like NixOS's run-*-vm scripts.
# @description@
# System: @toplevel@
#
# Needs only bash and QEMU (@qemu@); netbuild need not be installed. Run it from any
# directory: it boots @kernel@ and initrd from its own directory, with the kernel parameters in
# kernel-params. The serial console is this terminal: Ctrl-A X quits QEMU, Ctrl-A C is its monitor.
#
# Environment:
#   QEMU_MEMORY         guest memory in MiB (default @memory@; this image needs @boot_memory@ to boot:
#                       the unpacked store lives in RAM, see manifest.json's "memory")
#   QEMU_CPUS           virtual CPUs (default 1)
#   QEMU_KERNEL_PARAMS  extra kernel parameters, added after those in kernel-params
#   QEMU_NET_OPTS       options added to the user-mode network, e.g. "hostfwd=tcp::2222-:22"
#   QEMU_OPTS           extra QEMU options, split at white space (e.g. "-machine q35")
#   QEMU_ACCEL          QEMU's accelerator: tcg, kvm, or kvm:tcg (default: kvm:tcg when /dev/kvm is
#                       usable and this machine is @arch@, else tcg). Set tcg where /dev/kvm exists but hangs.
#   QEMU                the QEMU binary (default @qemu@)
# Arguments are passed on to QEMU:  ./run-qemu -snapshot -hda scratch.img
set -euo pipefail

# Only bash built-ins from here to exec: no coreutils needed.
case ${BASH_SOURCE[0]} in
    */*) here=${BASH_SOURCE[0]%/*} ;;
    *) here=. ;;
esac
here=$(cd -- "$here" && pwd)

params=$(<"$here/kernel-params")
if [[ -n ${QEMU_KERNEL_PARAMS:-} ]]; then
    params+=" $QEMU_KERNEL_PARAMS"
fi

# The store, when the layout brings it from outside the initrd (vm-9p, vm-disk; else nothing here).
vm_args=()
@vm_store@
memory=${QEMU_MEMORY:-@memory@}
if [[ $memory =~ ^[0-9]+$ ]] && (( memory < @boot_memory@ )); then
    echo "run-qemu: warning: QEMU_MEMORY=$memory MiB is less than the @boot_memory@ MiB this image needs to boot" >&2
fi

accel=${QEMU_ACCEL:-}
if [[ -z $accel ]]; then
    # KVM runs only a guest of the host's own architecture ($HOSTTYPE: bash's uname -m).
    if [[ -r /dev/kvm && -w /dev/kvm && $HOSTTYPE == @arch@ ]]; then accel=kvm:tcg; else accel=tcg; fi
fi

# QEMU_OPTS is split at white space on purpose, as NixOS's run-*-vm does.
# shellcheck disable=SC2086
exec "${QEMU:-@qemu@}" \
    @machine@-machine "accel=$accel" \
    -m "$memory" \
    -smp "${QEMU_CPUS:-1}" \
    -nographic \
    -no-reboot \
    -nic "user,model=virtio-net-pci${QEMU_NET_OPTS:+,$QEMU_NET_OPTS}" \
    -kernel "$here/@kernel@" \
    -initrd "$here/initrd" \
    -append "$params" \
    "${vm_args[@]}" \
    ${QEMU_OPTS:-} \
    "$@"
