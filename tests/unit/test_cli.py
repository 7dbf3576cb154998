"""The command line teaches: --help, the default command, `recipes`, and one-line usage errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def netbuild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, timeout=60)


def test_help_shows_the_main_job_and_the_subcommands() -> None:
    proc = netbuild("--help")
    assert proc.returncode == 0
    assert "netbuild CLOSURE.json -o OUT/" in proc.stdout
    assert "build" in proc.stdout and "recipes" in proc.stdout


def test_bare_netbuild_shows_the_help() -> None:
    proc = netbuild()
    assert proc.returncode == 0 and "netbuild CLOSURE.json -o OUT/" in proc.stdout and proc.stderr == ""


def test_build_help_lists_every_option() -> None:
    proc = netbuild("build", "--help")
    for option in ("--recipe", "--toplevel", "--kernel", "--init", "--append", "--compress", "--store-root",
                   "--base-url", "--jobs", "--out"):
        assert option in proc.stdout, option


def test_recipes_lists_and_prints_the_builtin_recipe() -> None:
    listing = netbuild("recipes")
    assert listing.returncode == 0 and "netboot (default)" in listing.stdout
    shown = netbuild("recipes", "netboot")
    assert shown.returncode == 0 and 'layout = "initramfs"' in shown.stdout


def test_usage_errors_are_one_line() -> None:
    proc = netbuild("closure.json", "--jobs", "0")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_version() -> None:
    proc = netbuild("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("netbuild, version ")


def test_iso_is_a_command_that_needs_out_or_a_chain_url(tmp_path: Path) -> None:
    assert " iso " in netbuild("--help").stdout
    cases = (([], "error: name the OUT to put on the disc (or --chain URL)\n"),
             ([str(tmp_path), "--chain", "http://h/x"], "error: name OUT, or --chain URL, but not both\n"),
             ([str(tmp_path), "--ipxe-efi", __file__], "error: --ipxe-lkrn and --ipxe-efi are for --chain\n"))
    for args, message in cases:
        proc = netbuild("iso", *args, "-o", str(tmp_path / "x.iso"))
        assert (proc.returncode, proc.stderr) == (1, message)
    assert list(tmp_path.iterdir()) == []


def test_every_build_option_is_a_field_of_options_and_every_field_an_option() -> None:
    """`netbuild build` passes its options to builder.plan.Options by name: an option without a field
    would fail every build, a field without an option could never be chosen."""
    import dataclasses

    from builder.cli.build import build_command
    from builder.plan import Options

    cli_only = {"closure", "out", "recipe", "quiet", "no_cache"}  # handled by the command itself
    internal = {"read_bootspec"}  # set only by a test, never by a user
    parameters = {p.name for p in build_command.params} - cli_only
    assert parameters == {f.name for f in dataclasses.fields(Options)} - internal

