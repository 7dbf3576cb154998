"""Debian's generic kernel, unpacked (not installed) for the vm-9p tests.

The fixtures boot Debian's cloud kernel, which is built without 9p (`# CONFIG_NET_9P is not set`);
the generic one (what linux-image-amd64 depends on) has 9p, 9pnet_virtio and netfs as modules. The
package is fetched with `apt-get download` and unpacked with `dpkg-deb -x` under the repository's
.tmp/ (gitignored), once per machine: later sessions find it there. Its name is resolved through
apt-cache on the machine's own release (linux-image-6.1.0-NN-amd64 on Debian 12, 6.12.NN-amd64 on 13),
never written down here. An flock serialises sessions that would fetch it at the same time.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".tmp" / "generic-kernel"
META_PACKAGE = "linux-image-amd64"
_VERSIONED = re.compile(r"^\s*Depends:\s*(linux-image-\S+-amd64)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class GenericKernel:
    package: str  # e.g. linux-image-6.1.0-57-amd64
    release: str  # e.g. 6.1.0-57-amd64
    vmlinuz: Path
    config: Path  # its /boot/config-<release>
    modules: Path  # its lib/modules/<release>


def _versioned_package() -> str:
    """The package linux-image-amd64 depends on, on this machine's release."""
    for attempt in range(2):
        proc = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
        found = _VERSIONED.search(proc.stdout)
        if found:
            return found.group(1)
        if attempt == 0:  # a root with no package lists yet (a fresh debootstrap): fetch them once
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=True)
    raise AssertionError(f"apt-cache depends {META_PACKAGE} names no linux-image-…-amd64:\n{proc.stdout}{proc.stderr}")


def _unpacked(root: Path, package: str) -> GenericKernel | None:
    release = package.removeprefix("linux-image-")
    kernel = GenericKernel(package=package, release=release, vmlinuz=root / "boot" / f"vmlinuz-{release}",
                           config=root / "boot" / f"config-{release}", modules=root / "lib" / "modules" / release)
    if kernel.vmlinuz.is_file() and kernel.config.is_file() and (kernel.modules / "modules.dep").is_file():
        return kernel
    return None


def generic_kernel() -> GenericKernel:
    """The generic kernel of this release, fetched and unpacked on first use."""
    package = _versioned_package()
    root = CACHE / package
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _unpacked(root, package)
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(dir=CACHE, prefix=".fetch-") as tmp:
            subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True, check=True)
            (deb,) = Path(tmp).glob("*.deb")
            staging = Path(tmp) / "root"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            # The package ships its modules under /lib (Debian 12) or /usr/lib (13, merged /usr).
            usr_lib = staging / "usr" / "lib" / "modules"
            if usr_lib.is_dir() and not (staging / "lib" / "modules").is_dir():
                (staging / "lib").mkdir(exist_ok=True)
                usr_lib.rename(staging / "lib" / "modules")
            # depmod's indexes (modules.dep, modules.alias, …) are made by the package's postinst,
            # which an unpacked package never runs. depmod -b looks under BASE/lib/modules (kmod's
            # default, Debian 12 and 13) or BASE/usr/lib/modules (a kmod built for /usr): both lead here.
            (staging / "usr" / "lib").mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(staging / "usr" / "lib" / "modules"):
                (staging / "usr" / "lib" / "modules").symlink_to("../../lib/modules")
            release = package.removeprefix("linux-image-")
            subprocess.run(["depmod", "-b", str(staging), release], check=True)
            shutil.rmtree(root, ignore_errors=True)
            staging.rename(root)
        found = _unpacked(root, package)
        assert found is not None, f"{root}: {package} did not unpack to a kernel, its config and modules"
        return found
