"""Watch a guest's serial console: pass it through to the user, and decide when the boot is over.

The console carries firmware (SeaBIOS, OVMF, iPXE), which draws with terminal escapes, then the
kernel and the system. Matching is done on a cleaned copy (escapes and carriage returns removed) so
that `--expect TEXT` finds TEXT however the firmware positioned it; the user sees the raw bytes.
"""

from __future__ import annotations

import codecs
import os
import re
import selectors
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

# CSI (ESC [ … final byte), other two-byte ESC sequences, and bare control characters but \n and \t.
_ESCAPE_SEQUENCE = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_c]")
_ESCAPES = re.compile(_ESCAPE_SEQUENCE.pattern + rb"|[\x00-\x08\x0b-\x1f\x7f]")
_PANIC = re.compile(r"Kernel panic - not syncing: ?([^\n]*)")
# Nothing will boot: iPXE's autoboot gave up on the script (on QEMU's one NIC, final: OVMF's own
# PXE fallback could only fetch the same script, which is no EFI program), SeaBIOS found no boot
# device, or OVMF fell through to its shell. Matched on whole lines, for the reason they carry.
_NOTHING_TO_BOOT = re.compile(
    r"(Could not boot(?: image)?: [^\n]*)\n|(No bootable device\.)|(No bootable option or device was found)"
    r"|(UEFI Interactive Shell)"
    # Secure Boot refused the image (unsigned, signed by a key db does not trust, or changed since).
    r"|(failed to load Boot[0-9A-F]+ [^\n]*: Access Denied)"
)
PANIC_LINE_WAIT_S = 2.0  # after "Kernel panic", how long to wait for the rest of its line
KEEP_CHARS = 1 << 16  # the cleaned console kept for matching and for error messages
TAIL_LINES = 15


class Ending(Enum):
    EXPECTED = "expected"  # --expect TEXT appeared
    EXITED = "exited"  # QEMU exited by itself (the guest powered off, or QEMU failed)
    PANIC = "panic"  # the kernel panicked
    NOTHING_TO_BOOT = "nothing-to-boot"  # the firmware found nothing it could boot
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    elapsed: float
    detail: str  # the panic reason, the firmware's words, …
    tail: str  # the last cleaned console lines, for an error message


def clean(raw: bytes) -> str:
    """Console bytes as text a person (or a regex) can read: escapes and CRs removed."""
    return _ESCAPES.sub(b"", raw).decode("utf-8", errors="replace")


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class ConsoleWatcher:
    """Reads QEMU's stdout (the console) and stderr until the boot is decided."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        sink: BinaryIO,
        error_sink: BinaryIO,
        expect: str | None,
        timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        self._sink = sink
        self._error_sink = error_sink
        self._expect = expect
        self._timeout = timeout
        self._clock = clock
        self._raw_tail = b""  # bytes not yet cleaned: an escape sequence may be cut between reads
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.console = ""  # cleaned, at most KEEP_CHARS
        self.stderr = b""

    def watch(self) -> Outcome:
        started = self._clock()
        deadline = None if self._timeout is None else started + self._timeout
        panic_deadline: float | None = None
        assert self._proc.stdout is not None and self._proc.stderr is not None
        kinds = {self._proc.stdout.fileno(): "console", self._proc.stderr.fileno(): "stderr"}
        open_streams = set(kinds)
        with selectors.DefaultSelector() as sel:
            for fd in kinds:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            while open_streams:  # both closed: QEMU has exited
                now = self._clock()
                limits = [t for t in (deadline, panic_deadline) if t is not None]
                if limits and now >= min(limits):
                    break
                for key, _ in sel.select(timeout=min([1.0, *(t - now for t in limits)])):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                        open_streams.discard(key.fd)
                    elif kinds[key.fd] == "stderr":
                        self.stderr = (self.stderr + chunk)[-KEEP_CHARS:]
                        self._error_sink.write(chunk)
                        self._error_sink.flush()
                    else:
                        self._sink.write(chunk)
                        self._sink.flush()
                        self._feed(chunk)
                        if self._expect is not None and self._expect in self.console:
                            return self._outcome(Ending.EXPECTED, started)
                        if panic := _PANIC.search(self.console):
                            if "\n" in self.console[panic.start():]:  # the reason's line is complete
                                return self._outcome(Ending.PANIC, started, panic.group(1).strip())
                            if panic_deadline is None:
                                panic_deadline = self._clock() + PANIC_LINE_WAIT_S
                        if nothing := _NOTHING_TO_BOOT.search(self.console):
                            reason = next(group for group in nothing.groups() if group)
                            return self._outcome(Ending.NOTHING_TO_BOOT, started, reason.strip())
        if panic := _PANIC.search(self.console):
            return self._outcome(Ending.PANIC, started, panic.group(1).strip())
        if not open_streams:
            return self._outcome(Ending.EXITED, started)
        return self._outcome(Ending.TIMEOUT, started)

    def _feed(self, chunk: bytes) -> None:
        data = self._raw_tail + chunk
        # Keep a possibly unfinished escape sequence for the next read.
        cut = data.rfind(b"\x1b")
        if cut != -1 and len(data) - cut < 32 and not _ESCAPE_SEQUENCE.match(data, cut):
            data, self._raw_tail = data[:cut], data[cut:]
        else:
            self._raw_tail = b""
        text = self._decoder.decode(_ESCAPES.sub(b"", data))  # incremental: a character may be cut too
        self.console = (self.console + text)[-KEEP_CHARS:]

    def _outcome(self, ending: Ending, started: float, detail: str = "") -> Outcome:
        return Outcome(ending=ending, elapsed=self._clock() - started, detail=detail, tail=_tail(self.console))
