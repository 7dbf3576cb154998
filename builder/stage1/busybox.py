"""The BusyBox the built-in stage 1 runs: the closure's (a store path with a static `bin/busybox`) or
the file given with --busybox.

It must be statically linked — the stage 1 holds no libraries and no dynamic loader — and built for
the kernel's architecture (builder/arch.py). Both are read from the ELF headers with pyelftools.
"""

from __future__ import annotations

import os
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from builder.arch import X86_64, Arch, by_elf_machine
from builder.closure import Closure, StoreFS, owner
from builder.errors import NetbuildError

BUSYBOX_IN_STORE_PATH = "bin/busybox"


def why_unusable(path: Path, arch: Arch = X86_64) -> str | None:
    """None if path is a static ELF executable for arch, else why it is not."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_machine"] != arch.elf_machines[0]:
                theirs = by_elf_machine(elf["e_machine"])
                return (f"it is built for {theirs.name if theirs else elf['e_machine']} ({elf['e_machine']}), "
                        f"not for the kernel's {arch.name}")
            if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
                return f"it is not an executable (ELF type {elf['e_type']})"
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    return f"it is dynamically linked (interpreter {segment.get_interp_name()})"
            for section in elf.iter_sections():
                if not isinstance(section, DynamicSection):
                    continue
                if any(tag.entry.d_tag == "DT_NEEDED" for tag in section.iter_tags()):
                    return "it is dynamically linked (it needs shared libraries)"
    except ELFError as e:
        return f"it is not an ELF executable ({e})"
    except OSError as e:
        return f"cannot read it: {e.strerror}"
    return None


def busybox_from_file(path: Path, arch: Arch = X86_64) -> Path:
    """--busybox FILE, checked."""
    if not path.is_file():
        raise NetbuildError(f"--busybox {path} does not exist or is not a file")
    reason = why_unusable(path, arch)
    if reason is not None:
        raise NetbuildError(f"--busybox {path}: the stage 1 needs a static {arch.name} BusyBox, but {reason}")
    return path


def busybox_from_closure(closure: Closure, store: StoreFS, arch: Arch = X86_64) -> tuple[str, Path]:
    """(store path of the binary, where it is on disk) of the first store path, in path order, with a
    static bin/busybox; its symlinks are followed inside the closure only."""
    rejected: list[str] = []
    for sp in closure:
        candidate = f"{sp.path}/{BUSYBOX_IN_STORE_PATH}"
        if not os.path.lexists(store.disk_path(candidate)):
            continue
        try:
            resolved = store.resolve(candidate)
        except NetbuildError as e:
            rejected.append(f"{candidate}: {e}")
            continue
        if owner(resolved) not in closure:
            rejected.append(f"{candidate} leads to {resolved}, outside the closure")
            continue
        disk = store.disk_path(resolved)
        reason = why_unusable(disk, arch) if disk.is_file() else "it is not a regular file"
        if reason is None:
            return candidate, disk
        rejected.append(f"{candidate}: {reason}")
    found = f" ({'; '.join(rejected)})" if rejected else ""
    raise NetbuildError(
        f"the built-in stage 1 needs a static {arch.name} BusyBox, and no store path of the closure has a static "
        f"{BUSYBOX_IN_STORE_PATH}{found}; add one to the closure or pass --busybox FILE "
        f"(e.g. /bin/busybox from Debian's busybox-static{'' if arch is X86_64 else ':arm64'})"
    )
