"""The `netbuild` command line: parse, call, print. No logic of its own.

One module per concern registers its commands here: build.py (the main job, recipes),
netboot.py (boot, serve, menu), look.py (check, inspect, diff, size), media.py (iso).
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from builder.build import netbuild_version
from builder.errors import NetbuildError

# Which module defines each command. A command's module is imported only when that command runs
# (or --help lists them all): QEMU, HTTP-server and treemap code stay out of every build's start-up.
_COMMAND_MODULES = {
    "build": "build", "recipes": "build",
    "boot": "netboot", "serve": "netboot", "menu": "netboot",
    "check": "look", "inspect": "look", "diff": "look", "size": "look",
    "iso": "media",
}

MAIN_HELP = """Turn a Nix store-path closure into netboot artifacts.

\b
  netbuild CLOSURE.json -o OUT/          the main job (CLOSURE '-' reads stdin)
  nix path-info --json -r $sys | netbuild - -o out/

OUT receives bzImage, initrd, kernel-params, netboot.ipxe, run-qemu,
registration, store-paths, total-nar-size, manifest.json and SHA256SUMS. Run
`netbuild build --help` for the build options, `netbuild recipes` for the
built-in recipes.
"""


class _MainJobGroup(click.Group):
    """`netbuild CLOSURE …` is `netbuild build CLOSURE …`: the main job needs no subcommand name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in _COMMAND_MODULES and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"builder.cli.{module_name}")
        command: click.Command = next(c for c in module.COMMANDS if c.name == cmd_name)
        return command


@click.group(cls=_MainJobGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(netbuild_version(), prog_name="netbuild")
def cli() -> None:
    pass


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
