"""--dtb NAME: the device tree U-Boot hands an arm64 kernel, named on pxelinux.cfg/default's FDT
line and shipped as OUT/devicetree.dtb.

It comes from the closure's kernel, where nixpkgs keeps them — <kernel>/dtbs/<vendor>/<board>.dtb,
which a NixOS toplevel links as <toplevel>/dtbs — and NAME is the path below dtbs/
("broadcom/bcm2711-rpi-4-b.dtb"), as in nixpkgs' hardware.deviceTree.name. Without --dtb the
kernel gets the firmware's own tree (QEMU's virt makes one; a board's U-Boot has its own), which is
what most boards want.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from builder.arch import X86_64, Arch
from builder.closure import Closure, StoreFS, owner
from builder.errors import NetbuildError

DTBS = "dtbs"
_LISTED = 8  # names listed in a refusal


@dataclass(frozen=True)
class DeviceTree:
    name: str  # as given, below dtbs/
    file: Path  # on this machine
    origin: str  # the store path of the file


def find_dtb(closure: Closure, store: StoreFS, *, name: str, toplevel: str | None, kernel_origin: str,
             arch: Arch) -> DeviceTree:
    if arch is X86_64:
        raise NetbuildError(f"--dtb {name}: device trees are for arm64 machines, and {kernel_origin} is an "
                            "x86_64 kernel")
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal != name or normal.startswith("..") or not name.endswith(".dtb"):
        raise NetbuildError(f"--dtb {name}: name a .dtb below the kernel's {DTBS}/, e.g. arm/juno.dtb")
    directories = [] if toplevel is None else [f"{toplevel}/{DTBS}"]
    if kernel_origin.startswith("/"):
        directories.append(f"{posixpath.dirname(kernel_origin)}/{DTBS}")
    present = [d for d in directories if os.path.isdir(store.disk_path(d))]
    if not present:
        where = " or ".join(directories) or "the closure (a --kernel outside it)"
        raise NetbuildError(f"--dtb {name}: the kernel ships no device trees (no {where})")
    for directory in present:
        candidate = f"{directory}/{name}"
        if not os.path.lexists(store.disk_path(candidate)):
            continue
        resolved = store.resolve(candidate)
        if owner(resolved) not in closure:
            raise NetbuildError(f"--dtb {name}: {candidate} leads to {resolved}, outside the closure")
        disk = store.disk_path(resolved)
        if not disk.is_file():
            raise NetbuildError(f"--dtb {name}: {candidate} is not a regular file")
        return DeviceTree(name=name, file=disk, origin=resolved)
    have = _names(store.disk_path(present[0]))
    listed = ", ".join(have[:_LISTED]) + (f", … ({len(have)} in all)" if len(have) > _LISTED else "")
    raise NetbuildError(f"--dtb {name}: not in {present[0]} (it has: {listed or 'no .dtb files'})")


def _names(root: Path) -> list[str]:
    found: list[str] = []
    for directory, _, files in os.walk(root, followlinks=True):
        relative = os.path.relpath(directory, root)
        found += [posixpath.normpath(posixpath.join(relative, f)) for f in files if f.endswith(".dtb")]
    return sorted(found)
