"""Helpers for the VM layouts' tests (vm-9p, vm-disk): run OUT/run-qemu as a person would, read what
the guest's init (tests/fixtures/vm-init.sh) reported, and list the initrd with independent tools."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support.qemu import console_tail
from support.squashfs import manifest_members, member_bytes

RUN_TIMEOUT_S = 180
UNPACK = {"zstd": ["zstd", "-dc"], "none": ["cat"], "gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"]}


@dataclass(frozen=True)
class Run:
    console: str  # stdout and stderr of run-qemu, \r\n as \n
    status: int

    def line(self, prefix: str) -> str:
        """The rest of the one console line starting with prefix."""
        found = re.findall(rf"^{re.escape(prefix)} ?(.*?)\s*$", self.console, re.MULTILINE)
        assert len(found) == 1, f"expected one {prefix!r} line, found {found}; console tail:\n" \
                                f"{console_tail(self.console)}"
        return str(found[0])


def run_qemu(out: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None,
             expect_ok: bool = True) -> Run:
    """OUT/run-qemu under TCG with its serial console captured, until the guest powers off."""
    environment = {**os.environ, "QEMU_ACCEL": "tcg", **(env or {})}
    for name in ("NIX_DISK_IMAGE", "NETBUILD_SHARES"):
        if env is None or name not in env:
            environment.pop(name, None)
    proc = subprocess.run([str(out / "run-qemu")], env=environment, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
    run = Run(console=proc.stdout.decode(errors="replace").replace("\r\n", "\n"), status=proc.returncode)
    if expect_ok and "\nNETBUILD-VM-OK\n" not in run.console:
        raise AssertionError(f"run-qemu (status {run.status}) printed no NETBUILD-VM-OK line; console tail:\n"
                             f"{console_tail(run.console)}")
    return run


def initrd_entry_names(out: Path) -> dict[str, list[str]]:
    """Every member of out/initrd (manifest.json's list), unpacked by its compressor and listed by GNU
    cpio: role → entry names."""
    names: dict[str, list[str]] = {}
    for member in manifest_members(out):
        plain = subprocess.run(UNPACK[member["compression"]], input=member_bytes(out, member), capture_output=True,
                               check=True).stdout
        listing = subprocess.run(["cpio", "-t", "--quiet"], input=plain, capture_output=True, check=True).stdout
        names.setdefault(member["role"], []).extend(listing.decode().splitlines())
    return names
