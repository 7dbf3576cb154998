"""Helpers for the netboot tests: run `netbuild boot` and read what the guest printed, run
`netbuild serve` in the background, and build a second system for the menu tests.

Every boot is forced onto TCG (`--accel tcg`): /dev/kvm on the test machine exists but crawls.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.digest import digest_of_lines, explain_mismatch, store_lines
from support.nixstore import FIXTURES, nix_build, path_info
from support.qemu import parse_digest, parse_entries

BOOT_TIMEOUT_S = 180  # a TFTP boot under UEFI and TCG takes ~15 s; room for a loaded CI machine
MARKER = "NETBUILD-BOOT-OK"
GUEST_HOST = "10.0.2.2"

# Written here rather than taken from builder.run.console: the check should not share the code it checks.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_c]|[\x00-\x08\x0b-\x1f\x7f]")


def plain_text(raw: bytes) -> str:
    """Console bytes without terminal escapes and carriage returns (firmware draws with them)."""
    return _ESCAPES.sub("", raw.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class BootRun:
    returncode: int
    console: str  # standard output, cleaned
    stderr: str

    def explain(self) -> str:
        tail = "\n".join(line for line in self.console.splitlines()[-25:] if line.strip())
        return f"exit {self.returncode}\nstderr:\n{self.stderr}\nconsole (tail):\n{tail}"


def netbuild_boot(directory: Path, *args: str, timeout: float = BOOT_TIMEOUT_S) -> BootRun:
    """`netbuild boot DIRECTORY ARGS… --accel tcg`, with a timeout of its own unless ARGS has one."""
    cmd = [sys.executable, "-m", "builder", "boot", str(directory), "--accel", "tcg", *args]
    if "--timeout" not in args:
        cmd += ["--timeout", str(timeout)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 60)
    return BootRun(proc.returncode, plain_text(proc.stdout), proc.stderr.decode(errors="replace"))


def assert_guest_store(console: str, paths: list[str], registration: bytes) -> None:
    """The guest's printed digest equals the host's digest of `paths` plus the registration."""
    expected = store_lines(paths, registration)
    if parse_digest(console) != digest_of_lines(expected):
        raise AssertionError(
            "the guest's /nix/store differs from the closure plus registration:\n"
            + explain_mismatch(parse_entries(console), expected)
        )


def guest_toplevels(console: str) -> set[str]:
    """The nixos-system-* store paths the guest listed in its /nix/store."""
    # Not anchored at the line's start: the guest's first line may follow firmware output on the same line.
    return {m.group(1) for m in re.finditer(r"NETBUILD-ENTRY d (/nix/store/[^/\s]+-nixos-system-[^/\s]+)$",
                                            console, re.MULTILINE)}


def http_log(stderr: str) -> list[tuple[str, str, int, int]]:
    """(method, path, status, bytes) for each request `netbuild boot --via http` logged."""
    return [(m.group(1), m.group(2), int(m.group(3)), int(m.group(4)))
            for m in re.finditer(r'^netbuild: http: \S+ "(\w+) (\S+)" (\d+) (\d+)', stderr, re.MULTILINE)]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a URL that must be known before the server starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Relabelled:
    toplevel: str
    paths: list[str]
    closure_json: Path


def relabelled_system(base_toplevel: str, label: str, tmp: Path) -> Relabelled:
    """tests/fixtures/relabelled-system.nix: a copy of `base_toplevel` named …-netbuild-<label>."""
    toplevel = nix_build(FIXTURES / "relabelled-system.nix", {}, {"base": base_toplevel, "label": label})
    info = path_info([toplevel])
    closure_json = tmp / f"{label}.json"
    closure_json.write_text(json.dumps(info))
    return Relabelled(toplevel, sorted(entry["path"] for entry in info), closure_json)


class ServeProcess:
    """A running `netbuild serve`; its standard output is collected line by line as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        banner = self.wait_for_lines(1)
        match = re.search(r" at (http://\S+?:\d+/)", banner[0]) if banner else None
        if match is None:
            self.stop()
            errors = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"netbuild serve printed {banner!r}; stderr: {errors}")
        self.url = match.group(1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_lines(self, count: int, timeout: float = 30) -> list[str]:
        """The first `count` lines printed (fewer if the server ends or the timeout passes): a request's
        log line comes just after its answer, so a test waits for it rather than racing it."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._lines) >= count or self.proc.poll() is not None, timeout)
            return list(self._lines[:count])

    def stop(self) -> list[str]:
        """SIGTERM (the normal way to stop it); every line it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        return list(self._lines)


@contextmanager
def netbuild_serve(*args: str) -> Iterator[ServeProcess]:
    """`netbuild serve ARGS… --port 0` in the background; yields once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "builder", "serve", *args, "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield ServeProcess(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
