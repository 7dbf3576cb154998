"""`make bench` in miniature: the benchmark runs end to end on a tiny closure and its correctness
checks hold (cold, warm, changed and uncached builds agree). Times are not judged here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.nix, pytest.mark.boot]

BENCH = Path(__file__).resolve().parent.parent / "bench.py"


def test_the_benchmark_runs_and_its_builds_agree(tmp_path: Path) -> None:
    table = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--write", str(table), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = table.read_text()
    for row in ("nixpkgs-style pipeline", "the limit", "netbuild, cold", "netbuild, warm, one package changed",
                "cold / zstd limit", "size / one zstd stream", "peak memory, any run",
                "serve / nginx, large file MB/s", "serve / nginx, small file requests/s"):
        assert row in text, row
    assert text.strip() == proc.stdout.strip()  # the table printed is the table kept
    # The warm build took every segment from the cache.
    warm = (tmp_path / "w" / "warm.stdout").read_text()
    reused, total = warm.split("; ")[1].split(" segments")[0].split(" of ")
    assert reused == total
