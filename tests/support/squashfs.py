"""Helpers for the squashfs layout's tests: the fixture closures it boots, reading its initrd back
with independent tools, and an interactive serial console for netbuild.shell."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import selectors
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.nixstore import FIXTURES, nix_build, nix_path_literal, path_info
from support.qemu import MARKER_GRACE_S, console_tail, kernel_release, qemu_command

RECIPE = "netboot-squashfs"
BUSYBOX = Path("/bin/busybox")
STAGE1_MODULES = ("loop", "squashfs", "overlay")


@dataclass(frozen=True)
class FixtureClosure:
    root: str  # the toplevel, or the single program of a closure that is not a system
    paths: list[str]  # sorted
    closure_json: Path  # `nix path-info --json -r` list form

    def path_named(self, suffix: str) -> str:
        (path,) = [p for p in self.paths if p.endswith(suffix)]
        return path


def fixture_closure(root: str, directory: Path) -> FixtureClosure:
    info = path_info([root])
    directory.mkdir(parents=True, exist_ok=True)
    closure_json = directory / "closure.json"
    closure_json.write_text(json.dumps(info, indent=2) + "\n")
    return FixtureClosure(root=root, paths=sorted(e["path"] for e in info), closure_json=closure_json)


def system_variant(kernel: Path, directory: Path, **flags: bool) -> FixtureClosure:
    """tests/fixtures/system.nix with some of its squashfs-layout arguments turned on
    (withStage1, withModules, overlayCheck, withInitrd)."""
    args = {"busybox": nix_path_literal(BUSYBOX), "kernel": nix_path_literal(kernel)}
    args.update({name: "true" if value else "false" for name, value in flags.items()})
    # Spelled without symlinks (/lib is one on merged-/usr systems): newer Nix resolves them before
    # its path filter sees a file, and the fixture's filter compares the two spellings.
    argstrs = {"kernelRelease": kernel_release(kernel), "hostModules": str(Path("/lib/modules").resolve())}
    toplevel = nix_build(FIXTURES / "system.nix", args, argstrs)
    return fixture_closure(toplevel, directory)


def run_probe_closure(directory: Path) -> FixtureClosure:
    """tests/fixtures/squashfs-run.nix: one program and its BusyBox, no toplevel."""
    return program_closure("squashfs-run.nix", directory)


def program_closure(fixture: str, directory: Path) -> FixtureClosure:
    """A fixture of one program and the BusyBox it runs with (no toplevel), built with this BusyBox."""
    probe = nix_build(FIXTURES / fixture, {"busybox": nix_path_literal(BUSYBOX)})
    return fixture_closure(probe, directory)


def host_modules(kernel: Path) -> Path:
    return Path("/lib/modules") / kernel_release(kernel)


def manifest_members(out: Path) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = json.loads((out / "manifest.json").read_text())["initrd"]["members"]
    return members


def member_bytes(out: Path, member: dict[str, Any]) -> bytes:
    with open(out / "initrd", "rb") as f:
        f.seek(member["offset"])
        return f.read(member["size"])


def extract_image(out: Path, directory: Path) -> Path:
    """Unpack the squashfs member of out/initrd with GNU cpio: the path of nix-store.squashfs."""
    (member,) = [m for m in manifest_members(out) if m["role"] == "squashfs"]
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cpio", "-idm", "--quiet"], input=member_bytes(out, member), cwd=directory, check=True)
    return directory / "nix-store.squashfs"


def nar_sha256(path: Path) -> str:
    """sha256 of `nix-store --dump PATH`: Nix's own serialisation of any path on disk."""
    dump = subprocess.run(["nix-store", "--dump", str(path)], capture_output=True, check=True).stdout
    return hashlib.sha256(dump).hexdigest()


class SerialConsole:
    """QEMU with its serial console on a pipe both ways: wait for output, type lines.

    support.qemu.boot() feeds QEMU no input; netbuild.shell needs a person at the console, so this
    helper plays one. Every method fails with the console's tail when what it waits for never comes.
    """

    def __init__(self, kernel: Path, initrd: Path, append: str, *, memory_mb: int = 512,
                 extra: tuple[str, ...] = ()) -> None:
        """extra: QEMU arguments after the kernel's (a VM layout's store)."""
        self.command = [*qemu_command(kernel, initrd, append, memory_mb), *extra]
        self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._output = bytearray()
        self._seen = 0  # expect() looks only after what an earlier expect() matched
        self.exited = False

    @property
    def text(self) -> str:
        return self._output.decode(errors="replace").replace("\r\n", "\n")

    def _pump(self, until: float) -> None:
        if self.exited:
            return
        if self._selector.select(timeout=max(0.0, min(0.5, until - time.monotonic()))):
            chunk = os.read(self._fd, 65536)
            if chunk:
                self._output += chunk
            else:
                self.exited = True

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[bytes]:
        regex = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self._output, self._seen)
            if match:
                self._seen = match.end()
                return match
            if self.exited or time.monotonic() >= deadline:
                why = "QEMU exited" if self.exited else f"timed out after {timeout:.0f} s"
                raise AssertionError(f"no {pattern!r} on the console ({why}).\ncommand: {' '.join(self.command)}\n"
                                     f"last console lines:\n{console_tail(self.text)}")
            self._pump(deadline)

    def type(self, line: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line.encode() + b"\n")
        self._proc.stdin.flush()

    def wait_exit(self, timeout: float = MARKER_GRACE_S + 20) -> int:
        """Read until QEMU exits by itself (the guest powered off); its exit status."""
        deadline = time.monotonic() + timeout
        while not self.exited and time.monotonic() < deadline:
            self._pump(deadline)
        if not self.exited:
            raise AssertionError(f"QEMU did not exit within {timeout:.0f} s; last console lines:\n"
                                 f"{console_tail(self.text)}")
        return self._proc.wait(timeout=10)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._selector.close()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
