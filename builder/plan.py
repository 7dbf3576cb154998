"""Resolve a recipe against a closure into one immutable BootPlan.

The plan names every choice the writers act on — kernel file, init path, command line,
compression, the store paths to ship — so that writing is mechanical and the manifest can record
exactly what was decided and why.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.closure import STORE_DIR, Closure, StoreFS
from builder.errors import NetbuildError
from builder.formats.bzimage import BzImageError, BzImageHeader, read_header_file
from builder.formats.compress import Compression
from builder.recipe import Recipe

IPXE_INITRD_PARAM = "initrd=initrd"
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
    cache_max_bytes: int = 10 << 30


@dataclass(frozen=True)
class Kernel:
    file: Path  # where to read it on this machine
    origin: str  # the store path it came from, or "--kernel" (a file outside the closure)
    header: BzImageHeader


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


def make_plan(closure: Closure, recipe: Recipe, options: Options) -> BootPlan:
    store = StoreFS(options.store_root)
    store.check_present(closure)
    toplevel = _find_toplevel(closure, store, options)
    kernel = _find_kernel(closure, store, toplevel, options)
    init = _find_init(closure, store, toplevel, options)
    # Whether init and the command line can boot is the preflight's question (checks/preflight.py),
    # so that a test can build the same plan without it and watch it fail in QEMU.
    cmdline = _command_line(closure, store, recipe, toplevel, init, options.append)
    _check_base_url(options.base_url)
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


def _owner(path: str) -> str:
    """The top-level store path a path inside the store belongs to."""
    rest = path[len(STORE_DIR) + 1:]
    return f"{STORE_DIR}/{rest.split('/', 1)[0]}"


def _in_closure(closure: Closure, store: StoreFS, path: str, what: str) -> str:
    """Resolve a path that must live in the closure — and so must whatever its symlinks lead to."""
    _check_in_closure(closure, path, path, what)
    resolved = store.resolve(path)
    _check_in_closure(closure, path, resolved, what)
    return resolved


def _check_in_closure(closure: Closure, path: str, candidate: str, what: str) -> None:
    via = "" if candidate == path else f" (it leads to {candidate})"
    if not candidate.startswith(STORE_DIR + "/"):
        raise NetbuildError(f"{what} {path} is not inside {STORE_DIR}{via}")
    owner = _owner(candidate)
    if owner not in closure:
        raise NetbuildError(f"{what} {path} belongs to {owner}, which is not in the closure{via}")


def _find_kernel(closure: Closure, store: StoreFS, toplevel: str | None, options: Options) -> Kernel:
    if options.kernel is not None:
        file, origin, name = options.kernel, "--kernel", str(options.kernel)
        if not file.is_file():
            raise NetbuildError(f"--kernel {file} does not exist or is not a file")
    else:
        assert toplevel is not None  # _find_toplevel guarantees one when --kernel is absent
        resolved = _in_closure(closure, store, f"{toplevel}/kernel", "the toplevel's kernel")
        file, origin, name = store.disk_path(resolved), resolved, resolved
        if not file.is_file():
            raise NetbuildError(f"the toplevel's kernel {resolved} is not a regular file")
    try:
        header = read_header_file(file)
    except BzImageError as e:
        raise NetbuildError(str(e)) from None
    except OSError as e:
        raise NetbuildError(f"{name}: cannot read: {e.strerror}") from None
    return Kernel(file=file, origin=origin, header=header)


def _find_init(closure: Closure, store: StoreFS, toplevel: str | None, options: Options) -> str:
    init = options.init if options.init is not None else f"{toplevel}/init"
    what = "--init" if options.init is not None else "the toplevel's init"
    if any(c.isspace() or not c.isprintable() for c in init):
        raise NetbuildError(f"{what} {init!r} contains white space or control characters, "
                            "which a kernel command line cannot carry")
    if not init.startswith(STORE_DIR + "/"):
        raise NetbuildError(f"{what} {init} is not inside {STORE_DIR}")
    return init  # in the closure, a regular executable, its interpreters present: see checks/preflight.py


def _command_line(
    closure: Closure, store: StoreFS, recipe: Recipe, toplevel: str | None, init: str, append: str
) -> str:
    if "${" in append:
        raise NetbuildError(
            "--append contains '${', which iPXE would expand in netboot.ipxe but kernel-params would not; "
            "pass per-machine parameters through iPXE's ${cmdline} instead"
        )
    params = [f"{recipe.init_parameter}={init}", *recipe.kernel_params]
    if toplevel is not None:
        params_path = f"{toplevel}/kernel-params"
        if os.path.lexists(store.disk_path(params_path)):
            resolved = _in_closure(closure, store, params_path, "the toplevel's kernel-params")
            try:
                text = store.disk_path(resolved).read_text(encoding="utf-8", errors="replace")
            except OSError as e:
                raise NetbuildError(f"the toplevel's kernel-params {resolved}: cannot read: {e.strerror}") from None
            params.extend(text.split())
    params.extend(append.split())
    return " ".join(params)


def _check_base_url(url: str | None) -> None:
    # ${…} is allowed: `http://${next-server}/img/` is a common iPXE idiom.
    if url is not None and not _URL.fullmatch(url):
        raise NetbuildError(f"--base-url {url!r} is not a URL like http://10.0.0.1/images/ (one line, no spaces)")
