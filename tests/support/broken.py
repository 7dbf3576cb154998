"""Closures that real Nix builds but that cannot boot (tests/fixtures/broken-systems.nix), and the
means to prove it: pack one without netbuild's preflight and boot it in QEMU until it fails."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support.nixstore import FIXTURES, nix_path_literal, path_info, run_nix
from support.qemu import qemu_command

BROKEN_NIX = FIXTURES / "broken-systems.nix"
# Built together in one nix-build (seconds); the big-file ones are built on their own, on demand.
SMALL_KINDS = (
    "good", "initDangling", "initNotExecutable", "initNotRegular", "interpreterMissing",
    "elfInterpreterMissing", "elfLibraryMissing", "elfComplete", "cmdlineTooLong", "kernelNotBootable",
    "zstdNotInKernelConfig",
)
BIG_KINDS = ("fileTooLarge", "initrdTooLarge")


@dataclass(frozen=True)
class BrokenSystem:
    kind: str
    toplevel: str
    closure_json: Path

    def path_named(self, suffix: str) -> str:
        (path,) = [e["path"] for e in json.loads(self.closure_json.read_text()) if e["path"].endswith(suffix)]
        return str(path)


def debian_kernel_config(kernel: Path, release: str) -> Path:
    """Debian's /boot/config-<release>, installed with the kernel beside /boot/vmlinuz-<release>."""
    config = kernel.parent / f"config-{release}"
    assert config.is_file(), f"no {config}: the kernel package ships it beside the kernel"
    return config


def build_kinds(kinds: tuple[str, ...], kernel: Path, release: str, workdir: Path) -> dict[str, BrokenSystem]:
    """nix-build the given attributes of broken-systems.nix; write each toplevel's closure JSON."""
    cmd = ["nix-build", "--no-out-link", str(BROKEN_NIX),
           "--arg", "busybox", nix_path_literal(Path("/bin/busybox")),
           "--arg", "kernel", nix_path_literal(kernel), "--argstr", "kernelRelease", release,
           "--arg", "kernelConfig", nix_path_literal(debian_kernel_config(kernel, release))]
    for kind in kinds:
        cmd += ["-A", kind]
    toplevels = run_nix(cmd).split()
    assert len(toplevels) == len(kinds), toplevels
    systems = {}
    for kind, toplevel in zip(kinds, toplevels, strict=True):
        closure_json = workdir / f"{kind}.json"
        closure_json.write_text(json.dumps(path_info([toplevel])))
        systems[kind] = BrokenSystem(kind, toplevel, closure_json)
    return systems


@dataclass(frozen=True)
class Boot:
    console: str
    exited: bool  # QEMU ended by itself (panic=-1 with -no-reboot, or a refusal of its own)
    returncode: int | None


def boot_to_the_end(kernel: Path, initrd: Path, append: str, *, timeout: float = 60, memory_mb: int = 512,
                    stop_at: str | None = None) -> Boot:
    """Boot and collect the console (QEMU's own stderr included) until QEMU exits, `stop_at` (a
    regex) has been seen, or the timeout passes. Unlike support.qemu.boot, not booting is the point."""
    cmd = qemu_command(kernel, initrd, append, memory_mb)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    output = bytearray()
    exited = False
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while (now := time.monotonic()) < deadline:
                if sel.select(timeout=min(1.0, deadline - now)):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        exited = True
                        break
                    output += chunk
                    if stop_at and re.search(stop_at, output.decode(errors="replace")):
                        break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    console = output.decode(errors="replace").replace("\r\n", "\n")
    return Boot(console, exited, proc.returncode if exited else None)
