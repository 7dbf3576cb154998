# --- The @layout@ layout's store, disk and shares (from builder/run/run-qemu-vm.sh) -------------
# The store: @store_what@. Environment:
#   NIX_DISK_IMAGE      a qcow2 image for what the guest writes under / and /nix/store, kept from run to
#                       run (as qemu-vm.nix's): created on the first with qemu-img (Debian: qemu-utils),
#                       NETBUILD_DISK_SIZE large (default 1024M), and formatted by the guest. Unset: every
#                       write is in RAM and gone at power-off.
#   NETBUILD_SHARES     host directories the guest mounts over 9p, separated by spaces:
#                       "HOSTDIR:/GUEST/PATH[:ro] …", e.g. NETBUILD_SHARES="$PWD:/mnt/src /tmp/xchg:/xchg:ro"
#                       (HOSTDIR without ':' or spaces; GUEST/PATH of letters, digits, '.', '_', '-', '/')
vm_args+=(@store_args@)
if [[ -n ${NIX_DISK_IMAGE:-} ]]; then
    if [[ ! -e $NIX_DISK_IMAGE ]]; then
        if ! command -v qemu-img >/dev/null; then
            echo "run-qemu: error: NIX_DISK_IMAGE=$NIX_DISK_IMAGE does not exist, and creating it needs qemu-img (Debian: qemu-utils)" >&2
            exit 1
        fi
        qemu-img create -q -f qcow2 "$NIX_DISK_IMAGE" "${NETBUILD_DISK_SIZE:-1024M}" >&2 || exit 1
        echo "run-qemu: created $NIX_DISK_IMAGE (${NETBUILD_DISK_SIZE:-1024M}); the guest formats it as it boots" >&2
    fi
    vm_args+=(-drive "file=${NIX_DISK_IMAGE//,/,,},if=none,id=persist,format=qcow2"
              -device "virtio-blk-pci,drive=persist,serial=@root_serial@")
    params+=" netbuild.persist"
fi
read -r -a shares <<<"${NETBUILD_SHARES:-}"
shared=0
for share in "${shares[@]}"; do
    host=${share%%:*} guest=${share#*:} mode=
    if [[ $share != *:* ]]; then guest=; fi
    if [[ $guest == *:ro ]]; then guest=${guest%:ro} mode=:ro; fi
    if [[ ! -d $host || ! $guest =~ ^/[A-Za-z0-9._/-]*$ ]]; then
        echo "run-qemu: error: NETBUILD_SHARES: '$share' is not HOSTDIR:/GUEST/PATH[:ro] with HOSTDIR a directory" >&2
        exit 1
    fi
    [[ $host == /* ]] || host=$PWD/$host
    tag=share$shared shared=$((shared + 1))
    vm_args+=(-virtfs "local,path=${host//,/,,},security_model=none,mount_tag=$tag${mode:+,readonly=on}")
    params+=" netbuild.share=$tag:$guest$mode"
done
