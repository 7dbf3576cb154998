"""The segment cache through the CLI on the real fixture closure: cold, warm, shared, disabled,
damaged and concurrent builds all publish the same OUT, byte for byte."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.nix

SEGMENTS = re.compile(rb"; (\d+) of (\d+) segments from the cache")


def tree(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def reused(stdout: bytes) -> tuple[int, int]:
    match = SEGMENTS.search(stdout)
    assert match, stdout
    return int(match[1]), int(match[2])


def test_cold_warm_shared_and_disabled_builds_publish_the_same_out(
    tmp_path: Path, system_closure, run_netbuild, built_out: Path
) -> None:  # type: ignore[no-untyped-def]
    closure = str(system_closure.closure_json)
    cache = tmp_path / "cache"
    cold = run_netbuild(closure, "-o", str(tmp_path / "cold"), "--cache-dir", str(cache))
    reused_cold, groups = reused(cold.stdout)
    assert reused_cold == 0 and list(cache.glob("segments/*/*.seg"))
    warm = run_netbuild(closure, "-o", str(tmp_path / "warm"), "--cache-dir", str(cache), "--jobs", "1")
    assert reused(warm.stdout) == (groups, groups)
    disabled = run_netbuild(closure, "-o", str(tmp_path / "disabled"), "--no-cache", "--cache-dir", str(tmp_path / "x"))
    assert not SEGMENTS.search(disabled.stdout) and not (tmp_path / "x").exists()
    # Shared: another build — of a different closure with store paths in common — filled the cache.
    shared_cache = tmp_path / "shared"
    busybox = system_closure.path_named("-busybox")
    kernel = next(p for p in system_closure.paths if "-linux-" in p) + "/bzImage"
    only_busybox = json.dumps([e for e in system_closure.path_info if e["path"] == busybox]).encode()
    run_netbuild("-", "-o", str(tmp_path / "other"), "--cache-dir", str(shared_cache), "--kernel", kernel,
                 "--init", f"{busybox}/bin/sh", input=only_busybox)
    shared = run_netbuild(closure, "-o", str(tmp_path / "shared-out"), "--cache-dir", str(shared_cache))
    assert reused(shared.stdout)[1] == groups
    for name in ("cold", "warm", "disabled", "shared-out"):
        assert tree(tmp_path / name) == tree(built_out), name


def test_a_damaged_cache_entry_is_rebuilt_and_never_shipped(
    tmp_path: Path, system_closure, run_netbuild, built_out: Path
) -> None:  # type: ignore[no-untyped-def]
    closure = str(system_closure.closure_json)
    cache = tmp_path / "cache"
    run_netbuild(closure, "-o", str(tmp_path / "first"), "--cache-dir", str(cache))
    entries = sorted(cache.glob("segments/*/*.seg"))
    originals = [e.read_bytes() for e in entries]
    for entry in entries:
        data = bytearray(entry.read_bytes())
        meta_size = struct.unpack_from("<Q", data, len(data) - 48)[0]  # the footer: u64, sha256, magic
        blob_size = len(data) - 48 - meta_size
        data[blob_size // 3] ^= 0x55  # inside the compressed members, which only the self-check reads
        entry.write_bytes(data)
    again = run_netbuild(closure, "-o", str(tmp_path / "again"), "--cache-dir", str(cache))
    assert reused(again.stdout)[0] == 0
    assert tree(tmp_path / "again") == tree(built_out)
    assert [e.read_bytes() for e in entries] == originals  # rebuilt whole


def test_two_builds_at_once_share_a_cache_and_both_are_right(
    tmp_path: Path, system_closure, built_out: Path
) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "builder", str(system_closure.closure_json), "-o", str(tmp_path / f"out{i}"),
             "--cache-dir", str(cache), "--jobs", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
    for i in range(3):
        assert tree(tmp_path / f"out{i}") == tree(built_out)
    assert list((cache / "tmp").iterdir()) == []
