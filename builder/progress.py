"""What a build tells while it works: the Reporter the CLI hands down to the layouts and writers,
and the one-line progress display on stderr (shown only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

Progress = Callable[[int, int], None]  # (store paths done, bytes of the closure done)


def _silent(*_told: object) -> None:
    pass


@dataclass(frozen=True)
class Reporter:
    """Where a build says what it is doing, one object from the CLI down to the writers: stage
    messages for a person watching (log), doubts it builds despite (warn: preflight's warnings),
    and how far packing has come (progress, called from any packing thread). Each says nothing
    unless given."""

    log: Callable[[str], None] = _silent
    warn: Callable[[str], None] = _silent
    progress: Progress = _silent


QUIET = Reporter()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class ProgressLine:
    def __init__(self, total_paths: int, total_bytes: int | None, stream: TextIO = sys.stderr) -> None:
        self.total_paths = total_paths
        self.total_bytes = total_bytes
        self.stream = stream
        self.started = time.monotonic()
        self._last = 0.0
        self.enabled = stream.isatty()

    def __call__(self, paths_done: int, bytes_done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and paths_done < self.total_paths:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = bytes_done / elapsed
        line = f"packing {paths_done}/{self.total_paths} store paths, {human_bytes(bytes_done)}, {human_bytes(rate)}/s"
        if self.total_bytes and rate > 0 and bytes_done < self.total_bytes:
            line += f", {max(0, (self.total_bytes - bytes_done) / rate):.0f} s left"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
