"""Debian's arm64 kernel (with its modules and device trees), static BusyBox and systemd-stub for the
arm64 tests, fetched the way the README documents, on any host (this one is x86-64):

    dpkg --add-architecture arm64; apt-get update
    apt-get download linux-image-<release>-cloud-arm64:arm64 busybox-static:arm64 systemd-boot-efi:arm64
    dpkg-deb -x each .deb (unpacked, never installed)
    dpkg --remove-architecture arm64; apt-get update        (in a trap: also when a step fails)

The kernel's versioned package name differs between Debian releases (and point releases): it is
what the metapackage linux-image-cloud-arm64 depends on, asked of apt-cache on this machine. The
unpacked tree is cached under the repository's .tmp/ (gitignored), one per Debian release, and
fetched once; a file lock in .tmp/ serialises sessions (and pytest-xdist workers) around it. A
machine that already had arm64 as a foreign architecture keeps it: it is left as it was.

Debian's package has no modules.dep (its postinst runs depmod on the installed system), so depmod
indexes the unpacked tree here, as it would on the arm64 machine.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support.nixstore import FIXTURES, nix_build, nix_path_literal
from support.squashfs import FixtureClosure, fixture_closure

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".tmp" / "arm64-debs"
LOCK = REPO / ".tmp" / "arm64-debs.lock"
METAPACKAGE = "linux-image-cloud-arm64"
PACKAGES = ("busybox-static", "systemd-boot-efi")
FETCH_TIMEOUT_S = 900

# The fetch, in one shell: the trap undoes the architecture whatever happens after it was added.
_FETCH = r"""
set -eu
dest=$1
had_arm64=no
if dpkg --print-foreign-architectures | grep -qx arm64; then had_arm64=yes; fi
restore() {
    if [ "$had_arm64" = no ]; then
        dpkg --remove-architecture arm64 || true
        apt-get update -q >/dev/null 2>&1 || true   # the arm64 package lists go with it
    fi
}
trap restore EXIT
[ "$had_arm64" = yes ] || dpkg --add-architecture arm64
apt-get update -q >/dev/null
kernel=$(apt-cache depends "$METAPACKAGE:arm64" | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
[ -n "$kernel" ] || { echo "apt-cache names no kernel package for $METAPACKAGE:arm64" >&2; exit 1; }
mkdir -p "$dest/debs" "$dest/root"
cd "$dest/debs"
apt-get download -q "$kernel:arm64" $(for p in $PACKAGES; do printf '%s:arm64 ' "$p"; done)
for deb in *.deb; do dpkg-deb -x "$deb" "$dest/root"; done
printf '%s\n' "${kernel#linux-image-}" > "$dest/release"
"""


@dataclass(frozen=True)
class Arm64Packages:
    root: Path  # the unpacked packages
    release: str  # the kernel's, e.g. 6.1.0-57-cloud-arm64

    @property
    def kernel(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        """<dir>/<release> is the modules tree: lib/modules (Debian 12) or usr/lib/modules (13)."""
        for candidate in (self.root / "lib" / "modules", self.root / "usr" / "lib" / "modules"):
            if (candidate / self.release).is_dir() and not candidate.is_symlink():
                return candidate
        raise AssertionError(f"no modules for {self.release} under {self.root}")

    @property
    def busybox(self) -> Path:
        for candidate in (self.root / "bin" / "busybox", self.root / "usr" / "bin" / "busybox"):
            if candidate.is_file() and not candidate.is_symlink():
                return candidate
        raise AssertionError(f"no busybox under {self.root}")

    @property
    def efi_stub(self) -> Path:
        return self.root / "usr" / "lib" / "systemd" / "boot" / "efi" / "linuxaa64.efi.stub"

    @property
    def dtbs(self) -> Path:
        return self.root / "usr" / "lib" / f"linux-image-{self.release}"


def _debian_release() -> str:
    fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return fields.get("VERSION_CODENAME", fields.get("VERSION_ID", "unknown")).strip('"')


def arm64_packages() -> Arm64Packages:
    """The unpacked packages, fetched on first use (root and the network needed then only)."""
    dest = CACHE / _debian_release()
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "done").is_file():
            subprocess.run(["rm", "-rf", str(dest)], check=True)
            proc = subprocess.run(
                ["bash", "-c", _FETCH, "fetch-arm64", str(dest)], capture_output=True, text=True,
                env={**os.environ, "METAPACKAGE": METAPACKAGE, "PACKAGES": " ".join(PACKAGES),
                     "DEBIAN_FRONTEND": "noninteractive"},
                timeout=FETCH_TIMEOUT_S,
            )
            if proc.returncode != 0:
                raise AssertionError(f"fetching Debian's arm64 packages failed:\n{proc.stderr}")
            release = (dest / "release").read_text().strip()
            packages = Arm64Packages(dest / "root", release)
            subprocess.run(["depmod", "-b", str(packages.modules_dir.parent.parent), release], check=True)
            (dest / "done").write_text("fetched\n")
    return Arm64Packages(dest / "root", (dest / "release").read_text().strip())


def arm64_system(packages: Arm64Packages, directory: Path, *, busybox: Path | None = None,
                 kernel: Path | None = None, guest_system: str = "aarch64-linux", console: str = "ttyAMA0",
                 dtbs: Path | None = None, **flags: bool) -> FixtureClosure:
    """tests/fixtures/system.nix for arm64: Debian's arm64 kernel as `Image` (with its .config
    beside it), its modules (withModules) and static BusyBox; `busybox`, `kernel` and `guest_system`
    swap a part for another architecture's, for the preflight's refusals."""
    args = {
        "busybox": nix_path_literal(busybox or packages.busybox),
        "kernel": nix_path_literal(kernel or packages.kernel),
        "kernelConfig": nix_path_literal(packages.root / "boot" / f"config-{packages.release}"),
        **({"dtbs": nix_path_literal(dtbs)} if dtbs is not None else {}),
        **{name: "true" if value else "false" for name, value in flags.items()},
    }
    argstrs = {"kernelRelease": packages.release, "guestSystem": guest_system, "console": console,
               "kernelFile": "Image" if kernel is None else "bzImage",
               "hostModules": str(packages.modules_dir.resolve())}
    return fixture_closure(nix_build(FIXTURES / "system.nix", args, argstrs), directory)
