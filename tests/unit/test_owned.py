"""Owned directories (builder/owned.py): a live build's is kept, a killed build's removed by the next,
and the cache's fault path warns once and stops writing."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from builder.cache import SegmentCache, cache_key, open_cache
from builder.owned import OwnedDir, remove_abandoned

HOLDER = """
import sys, time
from pathlib import Path
from builder.owned import OwnedDir
owned = OwnedDir(Path(sys.argv[1]), ".out.tmp-")
(owned.path / "initrd").write_bytes(b"x" * 1000)
print(owned.path, flush=True)
time.sleep(600)
"""


def test_a_live_owners_directory_is_kept_and_a_killed_ones_removed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    path = Path(proc.stdout.readline().decode().strip())
    try:
        remove_abandoned(tmp_path, ".out.tmp-")
        assert (path / "initrd").exists()  # its owner is alive
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert path.exists()  # SIGKILL: nothing cleaned up
    remove_abandoned(tmp_path, ".out.tmp-")
    assert os.listdir(tmp_path) == []


def test_this_processes_own_directory_is_kept_and_a_fresh_claim_too(tmp_path: Path) -> None:
    owned = OwnedDir(tmp_path, ".x.tmp-")
    claim = tmp_path / ".x.tmp-new-abc"
    claim.mkdir()  # a claim being made this instant by another build
    remove_abandoned(tmp_path, ".x.tmp-")
    assert owned.path.exists() and claim.exists()
    old = time.time() - 2 * 3600
    os.utime(claim, (old, old))
    remove_abandoned(tmp_path, ".x.tmp-")
    assert owned.path.exists() and not claim.exists()
    owned.release()
    remove_abandoned(tmp_path, ".x.tmp-")
    assert os.listdir(tmp_path) == []


def test_a_cache_fault_warns_once_and_stops_writing(tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = SegmentCache(tmp_path / "cache", warn=warnings.append)
    cache.fault(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    cache.fault(OSError(errno.EROFS, os.strerror(errno.EROFS)))
    assert len(warnings) == 1 and f"cache directory {tmp_path / 'cache'}: No space left on device" in warnings[0]
    assert cache.writer(cache_key({"a": 1})) is None
    cache.close()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_a_cache_that_cannot_be_made_is_one_warning_and_none(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    warnings: list[str] = []
    assert open_cache(tmp_path / "file" / "cache", warn=warnings.append) is None
    assert len(warnings) == 1 and "Not a directory" in warnings[0] and "building without the cache" in warnings[0]
