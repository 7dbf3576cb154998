"""The `netbuild` command line: parse, call, print. No logic of its own."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from builder.build import build, netbuild_version
from builder.closure import load_closure
from builder.errors import NetbuildError
from builder.formats.compress import CompressionError, parse_compression
from builder.plan import Options
from builder.progress import ProgressLine, human_bytes
from builder.recipe import DEFAULT_RECIPE, builtin_recipes, find_recipe, load_recipe

MAIN_HELP = """Turn a Nix store-path closure into netboot artifacts.

\b
  netbuild CLOSURE.json -o OUT/          the main job (CLOSURE '-' reads stdin)
  nix path-info --json -r $sys | netbuild - -o out/

OUT receives bzImage, initrd, kernel-params, netboot.ipxe, registration,
store-paths, total-nar-size, manifest.json and SHA256SUMS. Run
`netbuild build --help` for the build options, `netbuild recipes` for the
built-in recipes.
"""


class _MainJobGroup(click.Group):
    """`netbuild CLOSURE …` is `netbuild build CLOSURE …`: the main job needs no subcommand name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_MainJobGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(netbuild_version(), prog_name="netbuild")
def cli() -> None:
    pass


def _compression(_ctx: click.Context, _param: click.Parameter, value: str | None):  # type: ignore[no-untyped-def]
    if value is None:
        return None
    try:
        return parse_compression(value)
    except CompressionError as e:
        raise click.BadParameter(str(e)) from None


@cli.command("build")
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
@click.option("--append", multiple=True, metavar="PARAMS", help="Extra kernel parameters (repeatable).")
@click.option("--compress", callback=_compression, metavar="NAME[:LEVEL]",
              help="zstd, gzip, xz or none, optionally with a level (zstd:19). Default: the recipe's (zstd:10).")
@click.option("--store-root", type=click.Path(path_type=Path, file_okay=False), default="/", show_default=True,
              metavar="DIR", help="Read store paths from DIR/nix/store (e.g. a `nix copy --to` directory).")
@click.option("--base-url", metavar="URL",
              help="Write absolute URLs into netboot.ipxe (default: relative to the script).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="all cores",
              help="Compression threads. The output bytes do not depend on it.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def build_command(
    closure: str,
    out: Path,
    recipe: str,
    toplevel: str | None,
    kernel: Path | None,
    init: str | None,
    append: tuple[str, ...],
    compress,  # type: ignore[no-untyped-def]
    store_root: Path,
    base_url: str | None,
    jobs: int,
    quiet: bool,
) -> None:
    """Build netboot artifacts for CLOSURE.json into OUT.

    CLOSURE.json is the output of `nix path-info --json --recursive` (list or
    object form) or an exportReferencesGraph {"closure": [...]}; '-' reads it
    from standard input. Store paths without narHash/narSize get them computed
    from disk; given ones are verified while packing.

    \b
    Examples:
      netbuild closure.json -o out/
      nix path-info --json -r ./result | netbuild - -o out/ --compress xz
      netbuild closure.json --append console=ttyS0 --base-url http://10.0.0.1/img/
    """
    closure_obj = load_closure(*_read_input(closure))
    options = Options(
        toplevel=toplevel,
        kernel=kernel,
        init=init,
        append=" ".join(append),
        compression=compress,
        store_root=store_root,
        base_url=base_url,
        jobs=jobs,
    )
    recipe_obj = load_recipe(recipe)
    total = sum(sp.nar_size or 0 for sp in closure_obj) or None
    progress = ProgressLine(len(closure_obj), total)
    progress.enabled = progress.enabled and not quiet
    # Stage messages are for a person watching: on a pipe or in CI stderr carries only errors.
    chatty = not quiet and sys.stderr.isatty()
    log = (lambda msg: click.echo(msg, err=True)) if chatty else (lambda _msg: None)
    try:
        result = build(closure_obj, recipe_obj, options, out, progress=progress, log=log)
    finally:
        progress.close()
    if not quiet:
        _summary(result.out, result.artifacts, len(closure_obj), result.plan.compression, result.initrd.plain_size)


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


def _summary(out: Path, artifacts: dict[str, tuple[int, str]], paths: int, compression: object, plain: int) -> None:
    initrd = artifacts["initrd"][0]
    click.echo(f"{out}/: {paths} store paths, initrd {human_bytes(initrd)} ({compression}, "
               f"{human_bytes(plain)} unpacked), bzImage {human_bytes(artifacts['bzImage'][0])}")
    click.echo(f"try it: qemu-system-x86_64 -m 1024 -kernel {out}/bzImage -initrd {out}/initrd "
               f"-append \"$(cat {out}/kernel-params)\"")


@cli.command("recipes")
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


class _Interrupted(BaseException):
    """SIGINT or SIGTERM: unwinds like an error so that the staging directory is removed."""


def _interrupted(_signum: int, _frame: object) -> None:
    raise _Interrupted


def main(argv: list[str] | None = None) -> None:
    # Our own exception rather than KeyboardInterrupt, which click answers with a stray newline.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    if not (sys.argv[1:] if argv is None else argv):
        argv = ["--help"]  # a bare `netbuild` teaches rather than complains
    try:
        cli.main(args=argv, prog_name="netbuild", standalone_mode=False)
    except NetbuildError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (click.Abort, _Interrupted, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
