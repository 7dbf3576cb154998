"""Preflight: refuse a plan that cannot boot before anything is written, and the initrd it produced
when it is too large for the kernel or the firmware.

Each refusal names the store path or file at fault and what to do. What it guards against is a
failure seen only at boot time, on a remote machine:

- init missing, dangling, not a regular file or not executable — "failed to execute … (error -2)"
  or "(error -13)" from netbuild's /init, then "Attempted to kill init!" (with rdinit=, the
  kernel's own "VFS: Unable to mount root fs" or "No working init found");
- a `#!` interpreter (of init, or of an interpreter that is itself a script) not in the image, or an
  ELF program whose PT_INTERP or DT_NEEDED libraries are not — "failed to execute … (error -2)", or
  the loader's "error while loading shared libraries";
- a command line past the kernel's cmdline_size — the machine never gets as far as the kernel;
- a compression the kernel was built without, or a kernel without initrd support;
- a file of 4 GiB or more (cpio newc cannot hold it), an initrd past initrd_addr_max.

`--force` turns into warnings the errors where the check may be wrong about a particular machine
(a kernel configuration file that does not match the kernel, a library search that differs from
glibc's, an initrd loaded above 4 GiB by a 64-bit loader); never those that cannot boot anywhere.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from builder.arch import by_elf_machine, by_nix_system
from builder.cache import memoized
from builder.checks.elf import ElfInfo, ElfReadError, Found, is_elf, missing_libraries, read_elf
from builder.checks.vmstore import vm_kernel_problem
from builder.closure import STORE_DIR, Unresolved, owner
from builder.errors import NetbuildError
from builder.formats.compress import WRITTEN
from builder.formats.cpio import HEADER_SIZE, MAX_FILE_SIZE
from builder.formats.kconfig import (
    INITRD_OPTION,
    KconfigError,
    KernelConfig,
    config_beside,
    embedded_config_text,
    parse_config,
    read_config_file,
)
from builder.plan import IPXE_INITRD_PARAM, BootPlan

FIRMWARE_SAFE_INITRD = 2 << 30  # iPXE and many firmwares fail to load an initrd past 2 GiB
XLF_CAN_BE_LOADED_ABOVE_4G = 0x2  # xloadflags bit 1: a 64-bit loader may put kernel and initrd above 4 GiB
# The kernel follows at most this many `#!` interpreters (BINPRM_MAX_RECURSION), then fails with ELOOP.
MAX_INTERPRETER_DEPTH = 4
_SHEBANG_BYTES = 256  # BINPRM_BUF_SIZE: all of the `#!` line the kernel looks at


def preflight(plan: BootPlan) -> list[str]:
    """Raise NetbuildError for what would not boot; return warnings for what might not."""
    warnings: list[str] = []
    image = ClosureImage(plan)
    check_system(plan)
    check_init(plan, image, warnings)
    check_cmdline(plan)
    config = find_kernel_config(plan)  # once: it may unpack the kernel to find an embedded one
    check_compression(plan, config, warnings)
    if (problem := vm_kernel_problem(plan, config)) is not None:  # can it mount the layout's store?
        _refuse(plan, warnings, problem)
    if plan.recipe.layout == "initramfs":  # every store file becomes a cpio entry of its own
        check_store_files(plan, warnings)
    return warnings


def _refuse(plan: BootPlan, warnings: list[str], message: str) -> None:
    """An error that --force may override, with the override recorded as a warning."""
    if plan.options.force:
        warnings.append(f"{message} (--force: building anyway)")
        return
    raise NetbuildError(f"{message}; --force builds anyway")


# --- what the booted image holds ------------------------------------------------------------


class ClosureImage:
    """The store as the booted system sees it: the closure's store paths and nothing else.

    Symlinks are followed inside the image: every store path a lookup passes through must be in
    the closure (the host's store may hold more, which the machine will not have).
    """

    def __init__(self, plan: BootPlan) -> None:
        self._closure = plan.closure
        self._store = plan.store

    def lookup(self, path: str) -> tuple[str, os.stat_result] | str:
        """(resolved path, its stat) when path exists in the image; otherwise why it does not."""
        try:
            final = self._store.resolve(path, image=self._closure)
        except Unresolved as e:
            return str(e)
        if final in ("/", "/nix", STORE_DIR):
            return f"{final} is a directory, not a file"
        return final, os.stat(self._store.disk_path(final))

    def find(self, path: str) -> Found | None:
        """A regular file at path in the image (for the library search), else None."""
        hit = self.lookup(path)
        if isinstance(hit, str) or not stat.S_ISREG(hit[1].st_mode):
            return None
        return Found(hit[0], self._store.disk_path(hit[0]))


# --- the architecture -------------------------------------------------------------------------


SYSTEM_FILE = "system"  # a NixOS toplevel's: the Nix system it was built for, "aarch64-linux"


def check_system(plan: BootPlan) -> None:
    """The toplevel's `system` must name the kernel's architecture (builder/arch.py): an arm64 system
    with an x86 kernel, or the reverse, boots nowhere."""
    if plan.toplevel is None:
        return
    path = f"{plan.toplevel}/{SYSTEM_FILE}"
    disk = plan.store.disk_path(path)
    if not os.path.isfile(disk):
        return  # not NixOS-shaped: init's ELF header is checked all the same
    try:
        with open(disk, "rb") as f:
            system = f.read(64).decode("utf-8", "replace").strip()
    except OSError as e:
        raise NetbuildError(f"{path}: cannot read: {e.strerror}") from None
    arch = plan.kernel.arch
    theirs = by_nix_system(system)
    if theirs is not None and theirs != arch:
        raise NetbuildError(f"{path} says {system} ({theirs.name}), but the kernel {plan.kernel.origin} is an "
                            f"{arch.name} kernel ({arch.nix_system}); pack a closure built for one architecture")


# --- init and what it runs first ---------------------------------------------------------------


def check_init(plan: BootPlan, image: ClosureImage, warnings: list[str]) -> None:
    what = "--init" if plan.options.init is not None else "the toplevel's init"
    init = plan.init
    top = owner(init)
    if top not in plan.closure:
        raise NetbuildError(f"{what} {init} belongs to {top}, which is not in the closure; "
                            "pass the closure of the system you boot (nix path-info --json --recursive)")
    hit = image.lookup(init)
    if isinstance(hit, str):
        raise NetbuildError(f"{what} {init} is not in the image: {hit}; "
                            "starting it would fail with error -2 (ENOENT)")
    resolved, st = hit
    via = "" if resolved == init else f" (it leads to {resolved})"
    if not stat.S_ISREG(st.st_mode):
        raise NetbuildError(f"{what} {init} is not a regular file{via}; the kernel can only execute a file")
    if not st.st_mode & stat.S_IXUSR:
        raise NetbuildError(f"{what} {init} is not executable{via}; the kernel would fail with error -13 (EACCES)")
    check_program(plan, image, [f"{what} {init}"], resolved, warnings)


def check_program(plan: BootPlan, image: ClosureImage, chain: list[str], path: str, warnings: list[str]) -> None:
    """What the kernel does with execve(path): a `#!` script runs its interpreter (recursively), an
    ELF program its PT_INTERP loader, which then needs the DT_NEEDED libraries. `chain` names the
    programs so far (init, then each interpreter) for the messages."""
    named = " → ".join(chain)
    disk = plan.store.disk_path(path)
    try:
        with open(disk, "rb") as f:
            head = f.read(_SHEBANG_BYTES)
    except OSError as e:
        raise NetbuildError(f"{named}: cannot read {path}: {e.strerror}") from None
    if head.startswith(b"#!"):
        interpreter = _shebang_interpreter(head)
        if interpreter is None:
            raise NetbuildError(f"{named}: starts with '#!' but names no interpreter")
        if len(chain) > MAX_INTERPRETER_DEPTH:
            raise NetbuildError(f"{named}: more than {MAX_INTERPRETER_DEPTH} `#!` interpreters in a row; "
                                "the kernel gives up with error -40 (ELOOP)")
        step = f"{named} → {interpreter}"
        hit = image.lookup(interpreter)
        if isinstance(hit, str):
            raise NetbuildError(f"{step}: the `#!` interpreter is not in the image ({hit}); the kernel would "
                                "fail with error -2 (ENOENT). Point the `#!` line at a program in the closure")
        resolved, st = hit
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXUSR:
            raise NetbuildError(f"{step}: the `#!` interpreter is not a regular executable file")
        check_program(plan, image, [*chain, interpreter], resolved, warnings)
    elif is_elf(head):
        _check_elf(plan, image, named, Found(path, disk), warnings)
    else:
        raise NetbuildError(f"{named}: neither a `#!` script nor an ELF program; "
                            "the kernel would fail with error -8 (ENOEXEC)")


def _shebang_interpreter(head: bytes) -> str | None:
    # As binfmt_script: the line ends at a newline (or the buffer); spaces and tabs separate the
    # interpreter from its one optional argument.
    line = head[2:].split(b"\n", 1)[0]
    words = line.replace(b"\t", b" ").split()
    return os.fsdecode(words[0]) if words else None


def _check_elf(plan: BootPlan, image: ClosureImage, named: str, program: Found, warnings: list[str]) -> None:
    try:
        info = read_elf(program.disk)
    except ElfReadError as e:
        raise NetbuildError(f"{named}: {e}") from None
    arch = plan.kernel.arch
    if info.machine not in arch.elf_machines:
        theirs = by_elf_machine(info.machine)
        raise NetbuildError(
            f"{named}: an ELF program for {theirs.name if theirs else info.machine} ({info.machine}), but the kernel "
            f"{plan.kernel.origin} is an {arch.name} kernel, which cannot execute it (error -8, ENOEXEC); "
            "pack a closure built for one architecture")
    preloaded: tuple[ElfInfo, ...] = ()
    if info.interpreter is not None:
        loader = image.find(info.interpreter)
        if loader is None:
            raise NetbuildError(
                f"{named}: a dynamically linked ELF program whose loader (PT_INTERP) {info.interpreter} is not "
                "in the image; the kernel would fail with error -2 (ENOENT). Use a program built against the "
                "closure's C library, or a static one"
            )
        try:
            preloaded = (read_elf(loader.disk),)
        except ElfReadError as e:
            raise NetbuildError(f"{named}: its loader (PT_INTERP): {e}") from None
    missing = missing_libraries(program, info, image.find, preloaded=preloaded, default_dirs=arch.library_dirs)
    if missing:
        first = missing[0]
        where = ", ".join(first.searched[:3]) + (", …" if len(first.searched) > 3 else "")
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        who = "it" if first.needed_by == program.path else first.needed_by
        _refuse(plan, warnings,
                f"{named}: {who} needs the library {first.needed}{more}, found in none of "
                f"{where or 'the path it names'} in the image; the loader would stop with \"error while loading "
                "shared libraries\". Add the library's store path to the closure or fix the RUNPATH")


# --- the kernel: command line, initrd support, compression ----------------------------------


def check_cmdline(plan: BootPlan) -> None:
    # iPXE adds initrd=initrd (UEFI needs it); the kernel counts bytes, not characters.
    length = len(f"{IPXE_INITRD_PARAM} {plan.cmdline}".encode())
    limit = plan.kernel.header.cmdline_size
    if length > limit:
        raise NetbuildError(
            f"kernel command line is {length} bytes (with {IPXE_INITRD_PARAM}) but {plan.kernel.origin} accepts at "
            f"most {limit}; shorten --append or the toplevel's kernel-params"
        )


def find_kernel_config(plan: BootPlan) -> KernelConfig | None:
    """--kernel-config, else a config file beside the kernel, else the kernel's embedded IKCONFIG."""
    try:
        if plan.options.kernel_config is not None:
            return read_config_file(plan.options.kernel_config)
        beside = config_beside(plan.kernel.file, plan.kernel.header.release)
        if beside is not None:
            return read_config_file(beside)
        image = plan.kernel.file.read_bytes()
        # Finding IKCONFIG means decompressing the whole kernel (0.1 s, most of a warm rebuild's
        # preflight); the answer depends on the image's bytes alone.
        text = memoized(plan.options.cache_dir, "ikconfig", hashlib.sha256(image).hexdigest(),
                        lambda: embedded_config_text(image, plan.kernel.origin))
        return None if text is None else parse_config(text, f"{plan.kernel.origin} (embedded IKCONFIG)")
    except KconfigError as e:
        raise NetbuildError(f"kernel configuration: {e}") from None
    except OSError as e:
        raise NetbuildError(f"{plan.kernel.origin}: cannot read: {e.strerror}") from None


def check_compression(plan: BootPlan, config: KernelConfig | None, warnings: list[str]) -> None:
    if config is None:
        return  # nothing to go by: the kernel's own boot will tell
    if not config.enabled(INITRD_OPTION):
        _refuse(plan, warnings, f"{plan.kernel.origin} is built without initrd support "
                f"({INITRD_OPTION} is not set in {config.source}); it would ignore the initrd")
    codec = plan.compression.codec
    if codec.rd_option is not None and not config.enabled(codec.rd_option):
        # The codecs netbuild writes, in its order of preference, that this kernel can unpack.
        choices = ", ".join(c.name for c in WRITTEN if c.rd_option is None or config.enabled(c.rd_option))
        _refuse(plan, warnings,
                f"{plan.kernel.origin} cannot unpack a {codec.name} initrd ({codec.rd_option} is not set in "
                f"{config.source}); choose --compress {choices}")


# --- what the initrd will hold -----------------------------------------------------------------


def _files(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry under root (root included), without following symlinks."""
    st = os.lstat(root)
    yield root, st
    if stat.S_ISDIR(st.st_mode):
        with os.scandir(root) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                yield from _files(Path(entry.path))


def check_store_files(plan: BootPlan, warnings: list[str]) -> None:
    """No file of 4 GiB or more; and, uncompressed, an archive that fits below initrd_addr_max —
    both known from the file sizes alone, before minutes of packing."""
    archive = 0
    estimate = plan.compression.name == "none"
    for sp in plan.closure:
        if not estimate and sp.nar_size is not None and sp.nar_size <= MAX_FILE_SIZE:
            continue  # no file is larger than its store path's NAR: nothing to look at (rebuilds stay fast)
        disk_root = plan.store.disk_path(sp.path)
        for disk, st in _files(disk_root):
            name = sp.path + os.fsdecode(disk)[len(os.fsdecode(disk_root)) :]
            if stat.S_ISREG(st.st_mode) and st.st_size > MAX_FILE_SIZE:
                raise NetbuildError(
                    f"{name} is {st.st_size} bytes: the initrd's cpio format (newc) cannot hold a file of "
                    "4 GiB or more (its size field has 32 bits); keep such a file out of the closure"
                )
            data = st.st_size if stat.S_ISREG(st.st_mode) else len(os.readlink(disk)) if stat.S_ISLNK(st.st_mode) else 0
            archive += _padded(HEADER_SIZE + len(os.fsencode(name)))  # the name without its '/', plus a NUL
            archive += _padded(data)
    if plan.compression.name == "none":
        check_initrd_size(plan, archive, warnings=warnings, estimated=True)


def _padded(length: int) -> int:
    return length + (-length % 4)


def check_initrd_size(
    plan: BootPlan, size: int, *, warnings: list[str] | None = None, estimated: bool = False
) -> list[str]:
    """Errors past the kernel's initrd_addr_max; a warning past 2 GiB (firmware, iPXE)."""
    found: list[str] = [] if warnings is None else warnings
    start = len(found)
    what = f"the initrd will be at least {size} bytes" if estimated else f"the initrd is {size} bytes"
    limit = plan.kernel.header.initrd_addr_max + 1
    if size > limit:
        message = (
            f"{what} but {plan.kernel.origin} loads an initrd only below {limit} bytes (initrd_addr_max); "
            "use a stronger --compress or the netboot-squashfs recipe"
        )
        if plan.kernel.header.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
            # Loaders that use this flag (QEMU's -kernel, UEFI ones) may place the initrd anywhere
            # below 4 GiB or above; iPXE and most BIOS loaders keep to initrd_addr_max.
            _refuse(plan, found, message + "; only a loader that uses the kernel's XLF_CAN_BE_LOADED_ABOVE_4G "
                    "(QEMU's -kernel, UEFI) can load it, not iPXE")
        else:
            raise NetbuildError(message)
    elif size > FIRMWARE_SAFE_INITRD and not estimated:
        found.append(f"{what}: iPXE and many firmwares fail to load an initrd over 2 GiB")
    return found[start:]
