"""Resolve a recipe against a closure into one immutable BootPlan.

The plan names every choice the writers act on — kernel file, init path, command line,
compression, the store paths to ship — so that writing is mechanical and the manifest can record
exactly what was decided and why.

A toplevel's kernel, init, kernel parameters and stage 1 come from its boot.json when it has one
(builder/bootspec.py; its specialisations become netboot.ipxe's menu, or --specialisation picks one),
else from the symlinks beside it (`kernel`, `init`, `kernel-params`, `initrd`); --kernel and --init
override either.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.arch import Arch, by_name
from builder.bootspec import BOOT_JSON, BootEntry, Bootspec, parse_bootspec
from builder.cache import DEFAULT_MAX_BYTES
from builder.closure import STORE_DIR, Closure, StoreFS, owner
from builder.dtb import DeviceTree, find_dtb
from builder.errors import NetbuildError
from builder.formats.compress import Compression
from builder.formats.kernel import KernelHeader, KernelImageError, read_kernel
from builder.outcontract import INITRD
from builder.recipe import Recipe
from builder.writers.menu import ENTRY_NAME, MAIN_ENTRY
from builder.writers.uki import UkiChoice, plan_uki

IPXE_INITRD_PARAM = f"initrd={INITRD}"  # what iPXE adds to the command line: the initrd's name (UEFI needs it)
DEFAULT_MENU_TIMEOUT_S = 5
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Options:
    """What the user chose on the command line; None means 'take it from the closure or recipe'."""

    toplevel: str | None = None
    kernel: Path | None = None
    init: str | None = None
    append: str = ""
    compression: Compression | None = None
    store_root: Path = Path("/")
    base_url: str | None = None
    jobs: int = 1
    busybox: Path | None = None  # squashfs layout, built-in stage 1: BusyBox to use instead of the closure's
    modules: Path | None = None  # squashfs layout, built-in stage 1: a lib/modules/<version> tree
    kernel_config: Path | None = None  # the kernel's .config, when it cannot be found in the kernel or closure
    force: bool = False  # turn the preflight errors that allow it into warnings
    cache_dir: Path | None = None  # where initrd segments are cached; None: no cache
    cache_max_bytes: int = DEFAULT_MAX_BYTES  # the cache's bound (--cache-size)
    specialisation: str | None = None  # boot this specialisation of the toplevel (from its boot.json)
    menu_timeout_s: int = DEFAULT_MENU_TIMEOUT_S  # netboot.ipxe's menu of the specialisations; 0: no menu
    # Off only in the test proving that boot.json and the toplevel's symlinks give the same OUT.
    read_bootspec: bool = True
    uki: bool = False  # also write netboot.efi, a unified kernel image (builder/writers/uki.py)
    efi_stub: Path | None = None  # the systemd-stub to use when the closure has none
    sign_key: Path | None = None  # Secure Boot: sign netboot.efi with this key (PEM) …
    sign_cert: Path | None = None  # … and this certificate (PEM)
    sign_passphrase_env: str | None = None  # the environment variable holding the key's passphrase
    dtb: str | None = None  # arm64: the device tree pxelinux.cfg/default names, below the kernel's dtbs/


@dataclass(frozen=True)
class Kernel:
    file: Path  # where to read it on this machine
    origin: str  # the store path it came from, or "--kernel" (a file outside the closure)
    header: KernelHeader
    unpacked: bytes | None = None  # an Image.gz's Image, shipped instead of the file (formats/kernel.py)

    @property
    def arch(self) -> Arch:
        """The closure's architecture, as its kernel says (builder/arch.py)."""
        found = by_name(self.header.arch)
        assert found is not None  # formats/kernel.py reads only the kernels of builder/arch.py's machines
        return found

    def copy_to(self, dest: Path) -> None:
        """The kernel as OUT ships it: the file, or the Image an Image.gz holds."""
        if self.unpacked is None:
            shutil.copyfile(self.file, dest)
        else:
            dest.write_bytes(self.unpacked)


@dataclass(frozen=True)
class FromBootspec:
    """What the plan took from boot.json, for the manifest: each choice's field there (a jq path), or the
    option that overrode it."""

    file: str
    specialisation: str | None  # --specialisation, or None: the toplevel's own entry
    kernel: str
    init: str
    kernel_params: str
    initrd: str | None  # None: the entry names no stage 1


@dataclass(frozen=True)
class MenuEntry:
    """A system netboot.ipxe's menu offers: the main one or a specialisation. All boot the one bzImage and
    the one initrd (the specialisations' closures are inside the toplevel's)."""

    name: str  # MAIN_ENTRY for the main system, else the specialisation's name
    label: str
    toplevel: str
    init: str
    cmdline: str
    initrd: str | None  # its own stage 1, which the squashfs layout must find the same as the one it ships


@dataclass(frozen=True)
class Menu:
    entries: tuple[MenuEntry, ...]  # the main system first: the default
    timeout_s: int
    title: str


@dataclass(frozen=True)
class BootPlan:
    recipe: Recipe
    closure: Closure
    store: StoreFS
    toplevel: str | None
    kernel: Kernel
    init: str
    cmdline: str
    compression: Compression
    base_url: str | None
    jobs: int
    options: Options  # as given, for the choices only some layouts and checks act on
    system_initrd: str | None  # the system's own stage 1: its boot.json's `initrd`, else <toplevel>/initrd
    bootspec: FromBootspec | None  # None: no boot.json, the choices came from the toplevel's symlinks
    menu: Menu | None  # None: netboot.ipxe boots the system directly
    uki: UkiChoice | None = None  # None: no netboot.efi
    dtb: DeviceTree | None = None  # --dtb: OUT's devicetree.dtb, pxelinux.cfg/default's FDT (builder/dtb.py)


def make_plan(closure: Closure, recipe: Recipe, options: Options) -> BootPlan:
    store = StoreFS(options.store_root)
    store.check_present(closure)
    toplevel = _find_toplevel(closure, store, options)
    spec = _read_bootspec(closure, store, toplevel, options)
    booted = _booted_entry(spec, toplevel, options)
    kernel = _find_kernel(closure, store, toplevel, options, booted)
    init = _find_init(toplevel, options, booted)
    # Whether init and the command line can boot is the preflight's question (checks/preflight.py),
    # so that a test can build the same plan without it and watch it fail in QEMU.
    _check_append(options.append)
    cmdline = _command_line(recipe, init, _system_params(closure, store, toplevel, booted), options.append)
    _check_base_url(options.base_url)
    uki = plan_uki(closure, store, options.uki, options.efi_stub,
                   (options.sign_key, options.sign_cert, options.sign_passphrase_env), kernel.arch)
    dtb = None if options.dtb is None else find_dtb(closure, store, name=options.dtb, toplevel=toplevel,
                                                     kernel_origin=kernel.origin, arch=kernel.arch)
    return BootPlan(
        recipe=recipe,
        closure=closure,
        store=store,
        toplevel=toplevel,
        kernel=kernel,
        init=init,
        cmdline=cmdline,
        compression=options.compression or recipe.compression,
        base_url=options.base_url,
        jobs=max(1, options.jobs),
        options=options,
        system_initrd=_system_initrd(store, toplevel, booted),
        bootspec=_from_bootspec(spec, booted, options),
        menu=_menu(closure, store, recipe, spec, kernel, options),
        uki=uki,
        dtb=dtb,
    )


def _is_toplevel(store: StoreFS, path: str) -> bool:
    disk = store.disk_path(path)
    return os.path.lexists(disk / "kernel") and os.path.lexists(disk / "init")


def _find_toplevel(closure: Closure, store: StoreFS, options: Options) -> str | None:
    if options.toplevel is not None:
        top = options.toplevel.rstrip("/")
        if top not in closure:
            raise NetbuildError(f"--toplevel {top} is not in the closure")
        return top
    candidates = [r for r in closure.roots() if _is_toplevel(store, r)]
    if len(candidates) > 1:
        raise NetbuildError(
            f"{closure.source}: several roots have `kernel` and `init` ({', '.join(candidates)}); "
            "choose one with --toplevel"
        )
    if candidates:
        return candidates[0]
    if options.kernel is None or options.init is None:
        roots = ", ".join(closure.roots())
        raise NetbuildError(
            f"{closure.source}: no toplevel: no root of the closure ({roots}) has `kernel` and `init`; "
            "pass --toplevel, or --kernel and --init"
        )
    return None


def _in_closure(closure: Closure, store: StoreFS, path: str, what: str, *, named: bool = False) -> str:
    """Resolve a path that must live in the closure — and so must whatever its symlinks lead to.
    `named`: a path that does not resolve is reported as `what`'s too (a boot.json field's)."""
    _check_in_closure(closure, path, path, what)
    try:
        resolved = store.resolve(path)
    except NetbuildError as e:
        if not named:
            raise
        raise NetbuildError(f"{what}: {e}") from None
    _check_in_closure(closure, path, resolved, what)
    return resolved


def _check_in_closure(closure: Closure, path: str, candidate: str, what: str) -> None:
    via = "" if candidate == path else f" (it leads to {candidate})"
    top = owner(candidate)
    if top is None:
        raise NetbuildError(f"{what} {path} is not inside {STORE_DIR}{via}")
    if top not in closure:
        raise NetbuildError(f"{what} {path} belongs to {top}, which is not in the closure{via}")


def _read_bootspec(closure: Closure, store: StoreFS, toplevel: str | None, options: Options) -> Bootspec | None:
    """<toplevel>/boot.json, every path it names checked against the closure; None without one."""
    if toplevel is None or not options.read_bootspec:
        return None
    file = f"{toplevel}/{BOOT_JSON}"
    if not os.path.lexists(store.disk_path(file)):
        return None
    resolved = _in_closure(closure, store, file, "the toplevel's boot.json")
    try:
        data = store.disk_path(resolved).read_bytes()
    except OSError as e:
        raise NetbuildError(f"{file}: cannot read: {e.strerror}") from None
    spec = parse_bootspec(data, file)
    # Every entry, not only the one booted: a document that lies about the closure is not trusted.
    for entry in spec.entries():
        for key, path in (("kernel", entry.kernel), ("initrd", entry.initrd)):
            if path is not None:  # files read at build time: they must resolve inside the closure
                _in_closure(closure, store, path, entry.named(key), named=True)
        for key, path in (("init", entry.init), ("toplevel", entry.toplevel)):
            _check_in_closure(closure, path, path, entry.named(key))  # init: the preflight looks inside
    return spec


def _booted_entry(spec: Bootspec | None, toplevel: str | None, options: Options) -> BootEntry | None:
    """The boot.json entry the plan builds: the toplevel's own, or --specialisation's."""
    name = options.specialisation
    if name is None:
        return spec.main if spec is not None else None
    if spec is None:
        where = toplevel or "the closure (no toplevel)"
        raise NetbuildError(f"--specialisation {name}: {where} has no {BOOT_JSON}, so no specialisations "
                            "to choose from")
    entry = spec.specialisation(name)
    if entry is None:
        raise NetbuildError(f"--specialisation {name}: {spec.file} has no specialisation of that name "
                            f"(it has: {', '.join(spec.names()) or 'none'})")
    return entry


def _find_kernel(
    closure: Closure, store: StoreFS, toplevel: str | None, options: Options, booted: BootEntry | None
) -> Kernel:
    if options.kernel is not None:
        file, origin, name = options.kernel, "--kernel", str(options.kernel)
        if not file.is_file():
            raise NetbuildError(f"--kernel {file} does not exist or is not a file")
    else:
        if booted is not None:
            what = booted.named("kernel")
            resolved = _in_closure(closure, store, booted.kernel, what, named=True)
        else:
            assert toplevel is not None  # _find_toplevel guarantees one when --kernel is absent
            what = "the toplevel's kernel"
            resolved = _in_closure(closure, store, f"{toplevel}/kernel", what)
        file, origin, name = store.disk_path(resolved), resolved, resolved
        if not file.is_file():
            raise NetbuildError(f"{what} {resolved} is not a regular file")
    try:
        image = read_kernel(file, name=name)
    except KernelImageError as e:
        raise NetbuildError(str(e)) from None
    return Kernel(file=file, origin=origin, header=image.header, unpacked=image.unpacked)


def _find_init(toplevel: str | None, options: Options, booted: BootEntry | None) -> str:
    if options.init is not None:
        init, what = options.init, "--init"
    elif booted is not None:
        init, what = booted.init, booted.named("init")
    else:
        init, what = f"{toplevel}/init", "the toplevel's init"
    if any(c.isspace() or not c.isprintable() for c in init):
        raise NetbuildError(f"{what} {init!r} contains white space or control characters, "
                            "which a kernel command line cannot carry")
    if not init.startswith(STORE_DIR + "/"):
        raise NetbuildError(f"{what} {init} is not inside {STORE_DIR}")
    return init  # in the closure, a regular executable, its interpreters present: see checks/preflight.py


def _check_append(append: str) -> None:
    if "${" in append:
        raise NetbuildError(
            "--append contains '${', which iPXE would expand in netboot.ipxe but kernel-params would not; "
            "pass per-machine parameters through iPXE's ${cmdline} instead"
        )


def _system_params(closure: Closure, store: StoreFS, toplevel: str | None, booted: BootEntry | None) -> list[str]:
    """The system's own kernel parameters: its boot.json's, else the toplevel's kernel-params file."""
    if booted is not None:
        return _entry_params(booted)
    if toplevel is None:
        return []
    params_path = f"{toplevel}/kernel-params"
    if not os.path.lexists(store.disk_path(params_path)):
        return []
    resolved = _in_closure(closure, store, params_path, "the toplevel's kernel-params")
    try:
        text = store.disk_path(resolved).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise NetbuildError(f"the toplevel's kernel-params {resolved}: cannot read: {e.strerror}") from None
    return text.split()


def _entry_params(entry: BootEntry) -> list[str]:
    # Split into words as the kernel-params file's text is: nixpkgs writes that file as the same list
    # joined by spaces, so both give the same command line.
    return " ".join(entry.kernel_params).split()


def _command_line(recipe: Recipe, init: str, system_params: list[str], append: str) -> str:
    return " ".join([f"{recipe.init_parameter}={init}", *recipe.kernel_params, *system_params, *append.split()])


def _system_initrd(store: StoreFS, toplevel: str | None, booted: BootEntry | None) -> str | None:
    if booted is not None:
        return booted.initrd  # absent there: the system has no stage 1, whatever lies beside boot.json
    if toplevel is None:
        return None
    path = f"{toplevel}/initrd"
    return path if os.path.lexists(store.disk_path(path)) else None


def _from_bootspec(spec: Bootspec | None, booted: BootEntry | None, options: Options) -> FromBootspec | None:
    if spec is None or booted is None:
        return None
    return FromBootspec(
        file=spec.file,
        specialisation=options.specialisation,
        kernel="--kernel" if options.kernel is not None else booted.field("kernel"),
        init="--init" if options.init is not None else booted.field("init"),
        kernel_params=booted.field("kernelParams"),
        initrd=booted.field("initrd") if booted.initrd is not None else None,
    )


def _menu(
    closure: Closure, store: StoreFS, recipe: Recipe, spec: Bootspec | None, kernel: Kernel, options: Options
) -> Menu | None:
    """netboot.ipxe's menu: the main system and its specialisations, unless there are none, one was chosen
    with --specialisation, or --menu-timeout 0 asks for none."""
    if spec is None or not spec.specialisations or options.specialisation is not None or options.menu_timeout_s <= 0:
        return None
    entries = [_menu_entry(MAIN_ENTRY, spec.main, recipe, options)]
    for name, entry in spec.specialisations:
        if name == MAIN_ENTRY or not ENTRY_NAME.fullmatch(name):
            why = ("is the menu's name for the main system" if name == MAIN_ENTRY else
                   "cannot be an iPXE menu entry (letters, digits, '.', '_', '-', starting with a letter or digit)")
            raise NetbuildError(f"{spec.file}: the specialisation name {name!r} {why}; build it on its own with "
                                f"--specialisation, or build without the menu (--menu-timeout 0)")
        _check_same_kernel(closure, store, spec, name, entry, kernel, options)
        entries.append(_menu_entry(name, entry, recipe, options))
    return Menu(entries=tuple(entries), timeout_s=options.menu_timeout_s, title=spec.main.label)


def _menu_entry(name: str, entry: BootEntry, recipe: Recipe, options: Options) -> MenuEntry:
    init = options.init if options.init is not None else entry.init  # --init boots every entry
    return MenuEntry(name=name, label=entry.label, toplevel=entry.toplevel, init=init,
                     cmdline=_command_line(recipe, init, _entry_params(entry), options.append), initrd=entry.initrd)


def _check_same_kernel(
    closure: Closure, store: StoreFS, spec: Bootspec, name: str, entry: BootEntry, kernel: Kernel, options: Options
) -> None:
    # One OUT ships one bzImage (and one initrd, whose stage 1 and modules belong to that kernel): a
    # specialisation with a kernel of its own gets an OUT of its own, which `netbuild menu` can offer.
    if options.kernel is not None:
        return  # --kernel boots every entry
    theirs = _in_closure(closure, store, entry.kernel, entry.named("kernel"), named=True)
    if theirs != kernel.origin:
        raise NetbuildError(
            f"{spec.file}: specialisation {name!r} boots the kernel {theirs}, not the main system's {kernel.origin}, "
            f"and netboot.ipxe's entries share one bzImage: build it into an OUT of its own with --specialisation "
            f"{name} (`netbuild menu` offers several OUTs), or build without the menu (--menu-timeout 0)"
        )


def _check_base_url(url: str | None) -> None:
    # ${…} is allowed: `http://${next-server}/img/` is a common iPXE idiom.
    if url is not None and not _URL.fullmatch(url):
        raise NetbuildError(f"--base-url {url!r} is not a URL like http://10.0.0.1/images/ (one line, no spaces)")
