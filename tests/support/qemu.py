"""Boot a kernel and initrd in QEMU (TCG: /dev/kvm on this machine hangs) and capture the
serial console. The test guest prints marker lines and powers off, so a boot ends by itself."""

from __future__ import annotations

import os
import re
import selectors
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
MARKER_GRACE_S = 10.0  # how long QEMU may take to exit after the marker (poweroff -f)
TAIL_LINES = 40

_DIGEST_RE = re.compile(r"^NETBUILD-DIGEST ([0-9a-f]{64})\s*$", re.MULTILINE)
_ENTRY_RE = re.compile(r"^NETBUILD-ENTRY (.*)$", re.MULTILINE)


def qemu_command(kernel: Path, initrd: Path, append: str, memory_mb: int) -> list[str]:
    return [
        QEMU,
        "-accel", "tcg",
        "-m", str(memory_mb),
        "-no-reboot",  # panic=-1 reboots on a failed boot; this turns that into an exit
        "-display", "none",
        "-serial", "stdio",
        "-monitor", "none",
        "-nic", "none",  # nothing to do with the network, and no iPXE ROM to load
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", append,
    ]


def console_tail(console: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(console.splitlines()[-lines:])


def _read_console(proc: subprocess.Popen[bytes], timeout: float, expect: str) -> tuple[bytes, bool]:
    """Read QEMU's output until it exits, the marker has been seen for a grace period, or the
    timeout; return (output, whether QEMU exited by itself)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    marker = expect.encode()
    output = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (now := time.monotonic()) < deadline:
            if sel.select(timeout=min(1.0, deadline - now)):
                chunk = os.read(fd, 65536)
                if not chunk:  # EOF: QEMU has exited
                    return bytes(output), True
                output += chunk
                if marker in output:
                    deadline = min(deadline, time.monotonic() + MARKER_GRACE_S)
    return bytes(output), False


def boot(
    kernel: Path,
    initrd: Path,
    append: str,
    *,
    timeout: float = 120,
    memory_mb: int = 512,
    expect: str = "NETBUILD-BOOT-OK",
) -> str:
    """Boot and return the whole console text; fail unless `expect` appeared on a line."""
    attempt = try_boot(kernel, initrd, append, timeout=timeout, memory_mb=memory_mb, expect=expect)
    if not attempt.booted:
        raise AssertionError(
            f"no {expect!r} line on the console ({attempt.why}).\n"
            f"command: {' '.join(attempt.command)}\n"
            f"last {TAIL_LINES} console lines:\n{console_tail(attempt.console)}"
        )
    return attempt.console


@dataclass(frozen=True)
class Attempt:
    command: list[str]
    console: str
    booted: bool  # the `expect` line appeared
    why: str  # how QEMU ended: "QEMU exited with N" or "timed out after S s"


def try_boot(
    kernel: Path, initrd: Path, append: str, *, timeout: float = 120, memory_mb: int = 512,
    expect: str = "NETBUILD-BOOT-OK",
) -> Attempt:
    """Boot once and say whether `expect` appeared on a line (a boot that may fail on purpose)."""
    cmd = qemu_command(kernel, initrd, append, memory_mb)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        raw, exited = _read_console(proc, timeout, expect)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    console = raw.decode(errors="replace").replace("\r\n", "\n")
    booted = bool(re.search(rf"^{re.escape(expect)}\s*$", console, re.MULTILINE))
    why = f"QEMU exited with {proc.returncode}" if exited else f"timed out after {timeout:.0f} s"
    return Attempt(command=cmd, console=console, booted=booted, why=why)


def parse_digest(console: str) -> str:
    """The guest's `NETBUILD-DIGEST <hex>` value."""
    digests = set(_DIGEST_RE.findall(console))
    if len(digests) != 1:
        raise AssertionError(
            f"expected one NETBUILD-DIGEST line, found {sorted(digests)}; last console lines:\n{console_tail(console)}"
        )
    return digests.pop()


def parse_entries(console: str) -> list[str]:
    """The guest's `NETBUILD-ENTRY` lines (the digest's input), for diagnosing a mismatch."""
    return _ENTRY_RE.findall(console)


def kernel_release(bzimage: Path) -> str:
    """The release (first word of the version string) from an x86 bzImage's setup header."""
    with open(bzimage, "rb") as f:
        header = f.read(0x10000)
    if header[0x202:0x206] != b"HdrS":
        raise ValueError(f"{bzimage}: not an x86 bzImage (no HdrS magic)")
    (offset,) = struct.unpack_from("<H", header, 0x20E)
    start = offset + 0x200
    version = header[start : header.index(b"\0", start)].decode()
    return version.split()[0]


def find_kernel() -> Path:
    """The kernel the tests and the demo boot: $NETBUILD_TEST_KERNEL, else the newest /boot/vmlinuz-*."""
    override = os.environ.get("NETBUILD_TEST_KERNEL")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"NETBUILD_TEST_KERNEL={override} is not a file")
        return Path(override)
    candidates = [p for p in Path("/boot").glob("vmlinuz-*") if p.is_file()]
    if not candidates:
        raise FileNotFoundError("no kernel in /boot/vmlinuz-*: run `make install` (or set NETBUILD_TEST_KERNEL)")
    return max(candidates, key=lambda p: p.stat().st_mtime)
