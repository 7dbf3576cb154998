#!/usr/bin/env bash
# Run make targets (default: `make test`) on the other Debian release, in a debootstrap root.
#
#   tests/other-release.sh [TARGET…]      # what `make test-other-release` runs
#
# This machine's release decides the other one: Debian 12 (bookworm) tests on 13 (trixie) and the
# reverse. The root is made once with debootstrap (Debian's packages only) and kept under
# .tmp/debian-<release>; the project's files (what git tracks, plus untracked files it does not
# ignore) are copied into it fresh on every run, and its own `make` installs what it needs there,
# exactly as on a new machine. Root is required (debootstrap, chroot, mounts).
#
# /dev, /dev/pts, /proc, /sys and a /dev/shm are mounted for the root inside a private mount
# namespace (unshare -m) and unmounted by a trap: nothing stays mounted on the host after a failure,
# an interrupt or even a SIGKILL, since the namespace dies with the run.
#
# Environment: OTHER_RELEASE (bookworm or trixie, to choose), OTHER_ROOT (where the root lives),
# DEBIAN_MIRROR (default: debootstrap's own).
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "error: tests/other-release.sh needs root (debootstrap, chroot and mounts)" >&2
    exit 2
fi

case "$(cut -d. -f1 /etc/debian_version 2>/dev/null)" in
    12) default_release=trixie ;;
    13) default_release=bookworm ;;
    *) default_release= ;;
esac
release=${OTHER_RELEASE:-$default_release}
case "$release" in
    bookworm | trixie) ;;
    *) echo "error: OTHER_RELEASE=${release:-?}: choose bookworm or trixie" \
            "(this machine is Debian $(cat /etc/debian_version 2>/dev/null || echo '?'))" >&2
       exit 2 ;;
esac
root=${OTHER_ROOT:-$project/.tmp/debian-$release}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(test)

if [ "${NETBUILD_IN_NAMESPACE:-}" != 1 ]; then
    # Make (or reuse) the root, then run the rest in a private mount namespace.
    if [ ! -e "$root/.netbuild-root" ]; then
        command -v debootstrap >/dev/null || {
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
        }
        echo "other-release: debootstrap $release into $root"
        rm -rf "$root.partial"
        mkdir -p "$(dirname "$root")"
        # minbase + make: the rest is the project's own `make install`, as on a bare machine.
        debootstrap --variant=minbase --include=make,ca-certificates "$release" "$root.partial" \
            ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$root.debootstrap.log" 2>&1 || {
            tail -20 "$root.debootstrap.log" >&2
            echo "error: debootstrap $release failed (log: $root.debootstrap.log)" >&2
            exit 1
        }
        touch "$root.partial/.netbuild-root"
        rm -rf "$root"
        mv "$root.partial" "$root"
    fi
    export NETBUILD_IN_NAMESPACE=1 OTHER_RELEASE=$release OTHER_ROOT=$root
    exec unshare --mount --propagation private -- "$0" "${targets[@]}"
fi

# --- inside the private mount namespace ---
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
mount_in_root() {  # TYPE SOURCE TARGET [OPTIONS]
    mkdir -p "$3"
    if [ "$1" = bind ]; then mount --bind "$2" "$3"; else mount -t "$1" ${4:+-o "$4"} "$2" "$3"; fi
    mounted+=("$3")
}
# The root itself first, bound onto itself: inside the chroot / is then a mount point, as on a real
# machine (`unshare --propagation private`, which the tests use, needs one).
mount_in_root bind "$root" "$root"
mount_in_root bind /dev "$root/dev"
mount_in_root devpts devpts "$root/dev/pts" newinstance,ptmxmode=0666
mount_in_root tmpfs shm "$root/dev/shm" mode=1777
mount_in_root proc proc "$root/proc"
mount_in_root sysfs sysfs "$root/sys"
# The host's network settings: its name servers, and the certificates it trusts (a machine behind
# a TLS-inspecting proxy adds its own CA there; pip in the root must trust it too).
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi

# The project, fresh: every file git knows of (or would add), but the root's own venv is kept, and
# its .tmp/ (the arm64 packages the tests fetched for this release, tests/support/arm64.py).
dest="$root/work/netbuild"
mkdir -p "$dest"
find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv ! -name .tmp -exec rm -rf {} +
git -C "$project" ls-files -z --cached --others --exclude-standard |
    (cd "$project" && tar --null --files-from=- --create --file=- 2>/dev/null) | tar -C "$dest" -x

echo "other-release: make ${targets[*]} on Debian $(cat "$root/etc/debian_version") ($release) in $root"
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
    /bin/bash -c 'cd /work/netbuild && exec make "$@"' make "${targets[@]}"
