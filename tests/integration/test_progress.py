"""The progress line: on stderr when it is a terminal, silent on a pipe and with --quiet."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.nix


def _run_with_tty_stderr(args: list[str]) -> tuple[int, bytes, bytes]:
    """Run netbuild with stderr on a pseudo-terminal (as in an interactive shell), stdout on a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "builder", *args], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    stdout, _ = proc.communicate(timeout=600)
    return proc.returncode, stdout, bytes(seen)


def test_progress_shows_paths_bytes_and_rate_on_a_terminal(tmp_path: Path, system_closure) -> None:  # type: ignore[no-untyped-def]
    code, stdout, terminal = _run_with_tty_stderr(
        [str(system_closure.closure_json), "-o", str(tmp_path / "out"), "--no-cache"]
    )
    assert code == 0, terminal.decode(errors="replace")
    text = terminal.decode(errors="replace")
    total = len(system_closure.paths)
    assert re.search(rf"packing {total}/{total} store paths, [\d.]+ MiB, [\d.]+ \w+/s", text), text
    assert "\r\x1b[K" in text  # redrawn in place, and cleared at the end
    assert b"packing" not in stdout


def test_no_progress_on_a_pipe_or_with_quiet(tmp_path: Path, system_closure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    piped = run_netbuild(str(system_closure.closure_json), "-o", str(tmp_path / "a"), "--no-cache")
    assert piped.stderr == b""
    code, stdout, terminal = _run_with_tty_stderr(
        [str(system_closure.closure_json), "-o", str(tmp_path / "b"), "--no-cache", "--quiet"]
    )
    assert code == 0 and terminal == b"" and stdout == b""
