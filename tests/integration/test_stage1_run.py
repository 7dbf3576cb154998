"""The built-in stage 1 boots a closure that is not a NixOS system (tests/fixtures/squashfs-run.nix:
one program and its BusyBox; no toplevel, so --kernel, --init, --modules and --busybox are given):

- netbuild.run="PROGRAM ARG…" runs it with the store mounted, and its output, what it wrote into the
  /nix/store overlay and its exit status appear on the console before the guest powers off;
- netbuild.shell gives a shell on the serial console, driven here by typing into it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunNetbuild
from support.qemu import boot
from support.squashfs import BUSYBOX, RECIPE, FixtureClosure, SerialConsole, host_modules, run_probe_closure

pytestmark = [pytest.mark.boot, pytest.mark.nix]

BASE_PARAMS = "console=ttyS0 panic=-1 loglevel=4"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    return run_probe_closure(tmp_path_factory.mktemp("run-probe"))


@pytest.fixture(scope="module")
def run_out(
    probe: FixtureClosure, kernel_image: Path, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("run-out") / "out"
    run_netbuild(
        str(probe.closure_json), "-o", str(out), "--recipe", RECIPE,
        "--kernel", str(kernel_image), "--init", probe.root,
        "--busybox", str(BUSYBOX), "--modules", str(host_modules(kernel_image)),
        "--append", BASE_PARAMS, "--append", f'netbuild.run="{probe.root} one two"',
    )
    return out


def test_kernel_params_carry_the_run_parameter(run_out: Path, probe: FixtureClosure) -> None:
    params = (run_out / "kernel-params").read_text().strip()
    assert params == f'init={probe.root} {BASE_PARAMS} netbuild.run="{probe.root} one two"'


def test_run_prints_output_and_exit_status_then_powers_off(run_out: Path, probe: FixtureClosure) -> None:
    console = boot(run_out / "bzImage", run_out / "initrd", (run_out / "kernel-params").read_text().strip(),
                   expect="netbuild.run: exit status 7")
    lines = console.splitlines()
    assert "NETBUILD-RUN-ARGS [one two]" in lines  # the quoted parameter's words, as arguments
    assert "NETBUILD-RUN-SELF 1 probe in /nix/store" in lines  # the store it runs from is mounted
    assert "NETBUILD-RUN-WROTE written by the probe" in lines  # and writable (the overlay)
    run_at = lines.index("NETBUILD-RUN-ARGS [one two]")
    assert lines.index("netbuild.run: exit status 7") > run_at
    assert "reboot: Power down" in console


def test_shell_on_the_serial_console(run_out: Path, probe: FixtureClosure) -> None:
    """The same initrd booted with netbuild.shell instead (as iPXE's ${cmdline} would add it): a
    person types at the console, runs the program, leaves, and the machine powers off."""
    params = f"init={probe.root} {BASE_PARAMS} netbuild.shell"
    with SerialConsole(run_out / "bzImage", run_out / "initrd", params) as console:
        console.expect(r"netbuild.shell: a shell with the store on /nix/store; exit it to power off")
        console.expect(r"netbuild\.shell # ")
        console.type("echo NETBUILD-SHELL-$((6*7))")
        console.expect(r"\nNETBUILD-SHELL-42\r?\n")  # the shell's arithmetic, not the echo of the typed line
        console.expect(r"netbuild\.shell # ")
        console.type(f"{probe.root} from-the-shell; echo NETBUILD-SHELL-STATUS=$?")
        console.expect(r"NETBUILD-RUN-ARGS \[from-the-shell\]")
        console.expect(r"NETBUILD-SHELL-STATUS=7")
        console.expect(r"netbuild\.shell # ")
        console.type("exit")
        assert console.wait_exit() == 0
        assert "reboot: Power down" in console.text
        assert "netbuild.run:" not in console.text
