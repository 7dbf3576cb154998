"""A cache that cannot be used never fails a build that can succeed without it, and a killed build's
leftovers (OUT's staging copy, the cache's temporary files) are removed by the next build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.nix


def tree(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount after the test, last first."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def _read_only(tmp_path: Path, mounts: list[Path]) -> Path:
    """A cache directory on a read-only bind mount (root ignores 0555; a read-only mount it cannot)."""
    real, view = tmp_path / "real-cache", tmp_path / "ro-cache"
    (real / "segments").mkdir(parents=True)
    (real / "tmp").mkdir()
    view.mkdir()
    _mount("--bind", str(real), str(view))
    mounts.append(view)
    _mount("-o", "remount,bind,ro", str(view))
    return view


def _full(tmp_path: Path, mounts: list[Path]) -> Path:
    """A cache directory on a 1 MiB tmpfs filled to the last block."""
    point = tmp_path / "tiny"
    point.mkdir()
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point))
    mounts.append(point)
    cache = point / "cache"
    for sub in ("segments", "tmp"):
        (cache / sub).mkdir(parents=True)
    with open(point / "filler", "wb") as f, pytest.raises(OSError):  # ENOSPC, at last
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return cache


def _under_a_file(tmp_path: Path, mounts: list[Path]) -> Path:
    """A file where the cache directory's parent should be (--cache-dir naming a file itself is a usage error)."""
    (tmp_path / "file").write_text("not a directory")
    return tmp_path / "file" / "cache"


@pytest.mark.parametrize(
    ("make", "error"),
    [(_read_only, "Read-only file system"), (_full, "No space left on device"), (_under_a_file, "Not a directory")],
    ids=["read-only", "full", "under-a-file"],
)
def test_an_unusable_cache_warns_once_and_builds_the_same_out(
    tmp_path: Path, mounts: list[Path], system_closure, run_netbuild, built_out: Path, make, error: str
) -> None:  # type: ignore[no-untyped-def]
    cache = make(tmp_path, mounts)
    out = tmp_path / "out"
    proc = run_netbuild(str(system_closure.closure_json), "-o", str(out), "--cache-dir", str(cache))
    warnings = [line for line in proc.stderr.decode().splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"cache directory {cache}: " in warnings[0], proc.stderr
    assert "building without the cache" in warnings[0] and error in warnings[0], warnings[0]
    assert "Traceback" not in proc.stderr.decode()
    assert tree(out) == tree(built_out)
    if cache.is_dir():  # nothing left in the cache's temporary directory (ENOSPC must not leave .tmp files)
        assert list((cache / "tmp").iterdir()) == []
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".out.")) == []


def test_a_killed_build_leaves_nothing_beside_out_after_the_next(
    tmp_path: Path, system_closure, run_netbuild, built_out: Path
) -> None:  # type: ignore[no-untyped-def]
    closure = str(system_closure.closure_json)
    out, cache = tmp_path / "out", tmp_path / "cache"
    # xz at level 9 keeps the build busy long enough to be caught with its staging directory present.
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", closure, "-o", str(out), "--compress", "xz:9", "--cache-dir", str(cache)],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60

    def caught() -> bool:
        staging = any(p.startswith(".out.tmp-") for p in os.listdir(tmp_path))
        temps = cache / "tmp"
        return staging and temps.is_dir() and any(d.iterdir() for d in temps.iterdir() if d.is_dir())

    while not caught():
        assert proc.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    left = [p for p in os.listdir(tmp_path) if p.startswith(".out.")]
    assert left, "the killed build should have left its staging copy (else this test proves nothing)"
    assert any((cache / "tmp").iterdir())

    run_netbuild(closure, "-o", str(out), "--cache-dir", str(cache))
    assert sorted(os.listdir(tmp_path)) == ["cache", "out"]
    assert list((cache / "tmp").iterdir()) == []
    assert tree(out) == tree(built_out)


def test_a_live_builds_staging_copy_is_not_removed(tmp_path: Path, system_closure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    """Two builds beside each other: the second must not take the first's staging for abandoned."""
    closure = str(system_closure.closure_json)
    slow = subprocess.Popen(
        [sys.executable, "-m", "builder", closure, "-o", str(tmp_path / "out"), "--compress", "xz:9", "--no-cache"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not any(p.startswith(".out.tmp-") for p in os.listdir(tmp_path)):
        assert slow.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    # Another build of the same OUT name, beside it, runs its clean-up while the first is alive.
    run_netbuild(closure, "-o", str(tmp_path / "out"), "--no-cache", "--compress", "gzip:1")
    _, stderr = slow.communicate(timeout=600)
    assert slow.returncode == 0, stderr.decode()
    assert sorted(os.listdir(tmp_path)) == ["out"]
