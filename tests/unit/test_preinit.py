"""netbuild's /init (builder/preinit): its bytes are what GNU as makes of its source, the ELF is
what readelf and file(1) call a static executable, and it runs: in a private mount namespace on
this machine (as root), it runs the default init with argv[0] = that init on a bind mount of /, and
says how an init that cannot be executed failed, as the kernel would."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.preinit import CODE, preinit_program

PREINIT = Path(__file__).resolve().parents[2] / "builder" / "preinit"
SOURCE = PREINIT / "x86_64.S"
# architecture → (GNU as for it, its options, objcopy); binutils and binutils-aarch64-linux-gnu
ASSEMBLERS = {"x86_64": ("as", ["--64"], "objcopy"),
              "aarch64": ("aarch64-linux-gnu-as", [], "aarch64-linux-gnu-objcopy")}


@pytest.mark.parametrize("arch", sorted(ASSEMBLERS))
def test_the_code_is_what_gnu_as_makes_of_the_source(arch: str, tmp_path: Path) -> None:
    assembler, options, objcopy = ASSEMBLERS[arch]
    subprocess.run([assembler, *options, "-o", str(tmp_path / "p.o"), str(PREINIT / f"{arch}.S")], check=True)
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(tmp_path / "p.o"), str(tmp_path / "p.bin")],
                   check=True)
    assert CODE[arch][1] == (tmp_path / "p.bin").read_bytes()


def test_the_aarch64_program_is_an_arm64_static_executable(tmp_path: Path) -> None:
    # It runs in the arm64 boot tests (tests/integration/test_arm64.py); here, its headers.
    path = tmp_path / "init"
    path.write_bytes(preinit_program("/nix/store/" + "a" * 32 + "-system/init", "aarch64"))
    described = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True, check=True).stdout
    assert described.startswith("ELF 64-bit LSB executable, ARM aarch64") and "statically linked" in described


def test_a_static_executable_with_the_default_init_at_its_end(tmp_path: Path) -> None:
    program = preinit_program("/nix/store/" + "a" * 32 + "-system/init")
    assert program.endswith(b"-system/init\0")
    path = tmp_path / "init"
    path.write_bytes(program)
    described = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True, check=True).stdout
    assert described.startswith("ELF 64-bit LSB executable, x86-64") and "statically linked" in described
    headers = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True, check=True).stdout
    (load,) = [line.split() for line in headers.splitlines() if line.strip().startswith("LOAD")]
    assert int(load[4], 16) == len(program) and load[6] == "R" and load[7] == "E"  # the whole file, not writable
    with pytest.raises(ValueError):
        preinit_program("/nix/store/x\0y")


def _run(program: bytes, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "preinit"
    path.write_bytes(program)
    path.chmod(0o555)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", str(path), *args],
                          capture_output=True, text=True, timeout=30)


def test_it_runs_the_default_init_on_a_bind_mount_of_the_root(tmp_path: Path) -> None:
    # The host's /proc/cmdline names no init=, so the default runs: sh, told to describe its root.
    script = "echo argv0=$0; echo args=$*; ls /proc | wc -l"
    result = _run(preinit_program("/bin/sh"), tmp_path, "-c", script, "zero", "one")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # sh -c: $0 is the first argument after the script; then a bind of / without its submounts,
    # so the new root's /proc is empty (the tests run as root, like the rest of the suite).
    assert lines == ["argv0=zero", "args=one", "0"]


def test_an_init_that_cannot_run_is_reported_like_the_kernel_does(tmp_path: Path) -> None:
    result = _run(preinit_program("/nonexistent/init"), tmp_path)
    assert result.returncode == 1
    assert result.stderr == "netbuild /init: failed to execute /nonexistent/init (error -2)\n"
    not_executable = tmp_path / "plain-file"
    not_executable.write_text("not a program\n")
    result = _run(preinit_program(str(not_executable)), tmp_path)
    assert result.stderr == f"netbuild /init: failed to execute {not_executable} (error -13)\n"
