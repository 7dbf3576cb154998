"""Which QEMU accelerator to use: KVM where it really runs a guest fast, TCG everywhere else.

/dev/kvm can exist and be writable yet be useless: under some nested virtualisation (CI runners,
this project's own test machine) KVM runs firmware but crawls through anything heavier — a kernel
decompressing itself takes minutes, which looks like a hang. So `auto` does not trust the device
node: it runs a guest of a few bytes under KVM — a 16-million-iteration loop at the x86 reset
vector, then a write to QEMU's isa-debug-exit port — and uses KVM only if that guest finishes, with
the expected status, within a couple of seconds. Real KVM needs milliseconds, TCG about 0.1 s.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

ACCELERATORS = ("auto", "kvm", "tcg")
PROBE_TIMEOUT_S = 2.0
_DEBUG_EXIT_PORT = 0xF4
_PROBE_VALUE = 3
# isa-debug-exit makes QEMU exit with (value << 1) | 1.
_PROBE_STATUS = (_PROBE_VALUE << 1) | 1
_BIOS_SIZE = 64 * 1024
_RESET_VECTOR = 0xFFF0  # F000:FFF0, the first instruction an x86 CPU runs, 16 bytes below the end
# 16-bit code at F000:FFF0, 15 of the 16 bytes before the end of the BIOS image:
#   mov ecx, 0x01000000 ; l: dec ecx ; jnz l ; mov al, 3 ; out 0xf4, al ; hlt
_PROBE_CODE = bytes([
    0x66, 0xB9, 0x00, 0x00, 0x00, 0x01,
    0x66, 0x49,
    0x75, 0xFC,
    0xB0, _PROBE_VALUE,
    0xE6, _DEBUG_EXIT_PORT,
    0xF4,
])


def probe_bios() -> bytes:
    image = bytearray(b"\xf4" * _BIOS_SIZE)  # hlt everywhere else
    image[_RESET_VECTOR:_RESET_VECTOR + len(_PROBE_CODE)] = _PROBE_CODE
    return bytes(image)


def accelerator_runs(qemu: str, accel: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Run the probe guest under `accel`; (True, "") if it ran, else (False, why)."""
    with tempfile.TemporaryDirectory(prefix="netbuild-probe-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(probe_bios())
        cmd = [qemu, "-accel", accel, "-nodefaults", "-display", "none", "-m", "16", "-bios", str(bios),
               "-device", f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=0x04"]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as e:
            return False, f"cannot run {qemu}: {e.strerror}"
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            # A guest stuck inside the KVM ioctl may not even die; do not wait for it forever.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=2)
            return False, f"a test loop that takes TCG about 0.1 s did not finish in {timeout:g} s"
    if proc.returncode == _PROBE_STATUS:
        return True, ""
    last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return False, last[0]


def choose_accelerator(requested: str, qemu: str, note: Callable[[str], None] = lambda _: None) -> str:
    """'kvm' or 'tcg' for `requested` ('auto' probes; an explicit choice is taken as it is)."""
    if requested != "auto":
        return requested
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    works, why = accelerator_runs(qemu, "kvm")
    if works:
        return "kvm"
    note(f"KVM does not work here ({why}); using TCG, which is slower")
    return "tcg"
