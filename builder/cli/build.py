"""`netbuild build` (the main job, also reachable as `netbuild CLOSURE …`) and `netbuild recipes`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from builder.build import BuildResult, build
from builder.cache import DEFAULT_MAX_BYTES, default_cache_dir
from builder.closure import load_closure
from builder.errors import NetbuildError
from builder.formats.compress import Compression, parse_compression
from builder.formats.streams import CompressionError
from builder.outcontract import INITRD, NETBOOT_IPXE, RUN_QEMU, kernel_in
from builder.plan import DEFAULT_MENU_TIMEOUT_S, Options
from builder.progress import ProgressLine, Reporter, human_bytes
from builder.recipe import DEFAULT_RECIPE, builtin_recipes, find_recipe, load_recipe

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size_text(size: int) -> str:
    """A size as --cache-size takes it, in the largest unit that divides it: 10G for 10 << 30."""
    suffix, factor = next((s, f) for s, f in sorted(_SIZE_SUFFIXES.items(), key=lambda item: -item[1]) if size % f == 0)
    return f"{size // factor}{suffix}"


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number, suffix = (text[:-1], text[-1]) if text[-1:] in _SIZE_SUFFIXES else (text, "")
    if not number.isdigit():
        raise click.BadParameter(f"{value!r} is not a size like 500M or 10G")
    return int(number) * _SIZE_SUFFIXES[suffix]


def _joined(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> str:
    return " ".join(values)


def _compression(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Compression | None:
    if value is None:
        return None
    try:
        return parse_compression(value)
    except CompressionError as e:
        raise click.BadParameter(str(e)) from None


@click.command("build")
@click.argument("closure", metavar="CLOSURE.json")
@click.option("-o", "--out", default="out", show_default=True, type=click.Path(path_type=Path),
              help="Output directory; replaced atomically, left untouched if the build fails.")
@click.option("--recipe", default=DEFAULT_RECIPE, show_default=True, metavar="NAME|FILE",
              help="How to boot: a built-in recipe (see `netbuild recipes`) or a TOML file.")
@click.option("--toplevel", metavar="STORE_PATH",
              help="The system to boot; default: the root of the closure that has `kernel` and `init`.")
@click.option("--kernel", type=click.Path(path_type=Path), metavar="FILE",
              help="Kernel image to use instead of the toplevel's `kernel`.")
@click.option("--init", metavar="STORE_PATH", help="Init to run instead of <toplevel>/init (must be in the closure).")
@click.option("--append", multiple=True, callback=_joined, metavar="PARAMS",
              help="Extra kernel parameters (repeatable).")
@click.option("--specialisation", metavar="NAME",
              help="Boot this specialisation of the toplevel (from its boot.json): its kernel, init and "
                   "kernel parameters, in netboot.ipxe and kernel-params alike.")
@click.option("--menu-timeout", "menu_timeout_s", type=click.IntRange(min=0), default=DEFAULT_MENU_TIMEOUT_S,
              show_default=True, metavar="S",
              help="A toplevel with specialisations gets a netboot.ipxe menu of the system and each of them, "
                   "booting the system after S seconds; 0: no menu, boot the system directly. The iPXE "
                   "variable netbuild-specialisation=NAME skips the menu.")
@click.option("--compress", "compression", callback=_compression, metavar="NAME[:LEVEL]",
              help="zstd, gzip, xz or none, optionally with a level (zstd:19). Default: the recipe's (zstd:10).")
@click.option("--store-root", type=click.Path(path_type=Path, file_okay=False), default="/", show_default=True,
              metavar="DIR", help="Read store paths from DIR/nix/store (e.g. a `nix copy --to` directory).")
@click.option("--base-url", metavar="URL",
              help="Write absolute URLs into netboot.ipxe (default: relative to the script).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="all cores",
              help="Packing threads: each reads, compresses and checks groups of store paths (about 60 MB of "
                   "memory each at zstd:10). The output bytes do not depend on it.")
@click.option("--busybox", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Squashfs layout: a static BusyBox for the built-in stage 1 (default: the closure's).")
@click.option("--modules", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Squashfs layout: a lib/modules/<version> tree (default: the toplevel's kernel-modules).")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="The kernel's .config, for the preflight checks, when it is not embedded or in the closure.")
@click.option("--force", is_flag=True, help="Build despite preflight errors that can be overridden; says which.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Cache of compressed initrd segments, reused by rebuilds.  [default: $XDG_CACHE_HOME/netbuild]")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache (every store path is re-read "
              "and its NAR hash re-verified).")
@click.option("--cache-size", "cache_max_bytes", callback=_size, default=_size_text(DEFAULT_MAX_BYTES),
              show_default=True, metavar="SIZE",
              help="Bound on the cache (K, M, G suffixes); least recently used segments are dropped beyond it.")
@click.option("--uki", is_flag=True,
              help="Also write OUT/netboot.efi: a unified kernel image (systemd-stub, kernel, initrd, command "
                   "line) that UEFI firmware boots by itself, over UEFI HTTP Boot or from a disk, without iPXE.")
@click.option("--efi-stub", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="--uki: the systemd-stub to use when the closure's systemd has none "
                   "(default: the host's, Debian's systemd-boot-efi).")
@click.option("--sign-key", type=click.Path(path_type=Path, dir_okay=False), metavar="KEY",
              help="--uki: sign netboot.efi for Secure Boot with this PEM private key (and --sign-cert). With "
                   "Secure Boot on, the firmware boots it only if its db trusts the certificate, and "
                   "systemd-stub ignores a command line from the loader: ${cmdline} and boot-time --append "
                   "do not apply, the built-in command line does.")
@click.option("--sign-cert", type=click.Path(path_type=Path, dir_okay=False), metavar="CERT",
              help="--uki: the PEM certificate of --sign-key.")
@click.option("--sign-passphrase-env", metavar="VAR",
              help="--sign-key is encrypted: the environment variable that holds its passphrase.")
@click.option("--dtb", metavar="NAME",
              help="arm64: the device tree U-Boot hands the kernel, below the closure's kernel dtbs/ (e.g. "
                   "broadcom/bcm2711-rpi-4-b.dtb): OUT/devicetree.dtb and pxelinux.cfg/default's FDT line. "
                   "Default: the firmware's own.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def build_command(
    closure: str, out: Path, recipe: str, quiet: bool, cache_dir: Path | None, no_cache: bool, **choices: Any,
) -> None:
    """Build netboot artifacts for CLOSURE.json into OUT.

    CLOSURE.json is the output of `nix path-info --json --recursive` (list or
    object form) or an exportReferencesGraph {"closure": [...]}; '-' reads it
    from standard input. Store paths without narHash/narSize get them computed
    from disk; given ones are verified while packing.

    A toplevel with a boot.json (bootspec v1) is booted as it says: kernel,
    init, kernel parameters and stage 1 come from there, not from the
    toplevel's symlinks; --kernel and --init still override them.

    \b
    Examples:
      netbuild closure.json -o out/
      nix path-info --json -r ./result | netbuild - -o out/ --compress xz
      netbuild closure.json --append console=ttyS0 --base-url http://10.0.0.1/img/
      netbuild closure.json --specialisation rescue -o out-rescue/
      netbuild closure.json --uki --sign-key db.key --sign-cert db.pem   # UEFI HTTP Boot, Secure Boot
    """
    closure_obj = load_closure(*_read_input(closure))
    # The other options' parameter names are Options' field names, so they pass straight through:
    # an option is one decorator and one field (tests/unit/test_cli.py checks the two lists agree).
    options = Options(cache_dir=None if no_cache else (cache_dir or default_cache_dir()), **choices)
    recipe_obj = load_recipe(recipe)
    total = sum(sp.nar_size or 0 for sp in closure_obj) or None
    progress = ProgressLine(len(closure_obj), total)
    progress.enabled = progress.enabled and not quiet
    # Stage messages are for a person watching: on a pipe or in CI stderr carries only errors.
    chatty = not quiet and sys.stderr.isatty()
    report = Reporter(
        log=(lambda msg: click.echo(msg, err=True)) if chatty else (lambda _msg: None),
        warn=(lambda msg: click.echo(f"warning: {msg}", err=True)) if not quiet else (lambda _msg: None),
        progress=progress,
    )
    try:
        result = build(closure_obj, recipe_obj, options, out, report=report)
    finally:
        progress.close()
    if not quiet:
        _summary(result, len(closure_obj))


def _read_input(closure: str) -> tuple[str, bytes]:
    if closure == "-":
        return "<stdin>", sys.stdin.buffer.read()
    try:
        return closure, Path(closure).read_bytes()
    except FileNotFoundError:
        raise NetbuildError(f"{closure}: no such file") from None
    except IsADirectoryError:
        raise NetbuildError(f"{closure}: is a directory, expected closure JSON") from None
    except OSError as e:
        raise NetbuildError(f"{closure}: cannot read: {e.strerror}") from None


def _summary(result: BuildResult, paths: int) -> None:
    out, artifacts, initrd = result.out, result.artifacts, result.initrd
    kernel = kernel_in(artifacts) or INITRD  # always one: the build wrote it
    reused = ""
    if initrd.reused is not None:
        reused = f"; {initrd.reused[0]} of {initrd.reused[1]} segments from the cache"
    click.echo(f"{out}/: {paths} store paths, {INITRD} {human_bytes(artifacts[INITRD][0])} ({result.plan.compression}, "
               f"{human_bytes(initrd.plain_size)} unpacked{reused}), {kernel} {human_bytes(artifacts[kernel][0])}")
    menu = result.plan.menu
    if menu is not None:
        click.echo(f"{NETBOOT_IPXE}: a menu ({', '.join(e.name for e in menu.entries)}); {menu.entries[0].name} boots "
                   f"after {menu.timeout_s} s unless the iPXE variable netbuild-specialisation names another")
    click.echo(f"memory: boots with {result.memory.boot_mib} MiB of RAM or more "
               f"({human_bytes(result.memory.rootfs_bytes)} unpacked into a tmpfs, which may fill half of it)")
    via = "http" if result.plan.kernel.arch.name == "x86_64" else "uboot"  # arm64: U-Boot, no iPXE
    click.echo(f"try it: {out}/{RUN_QEMU}   (or: netbuild boot {out} --via {via})")


@click.command("recipes")
@click.argument("name", required=False)
def recipes_command(name: str | None) -> None:
    """List the built-in recipes, or print one recipe's file (documented inline).

    \b
    Examples:
      netbuild recipes
      netbuild recipes netboot > my.toml && netbuild closure.json --recipe my.toml
    """
    if name is not None:
        click.echo(find_recipe(name).read_text(), nl=False)
        return
    for path in builtin_recipes():
        r = load_recipe(str(path))
        default = " (default)" if r.name == DEFAULT_RECIPE else ""
        click.echo(f"{r.name}{default}\n  {r.description}\n  layout={r.layout} compress={r.compression} "
                   f"init={r.init_parameter}=…")


COMMANDS: list[click.Command] = [build_command, recipes_command]
