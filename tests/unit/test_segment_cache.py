"""The segment cache, alone and under the initrd writer: reuse, damage, pruning, sharing."""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
from pathlib import Path

import pytest
from support.initrd import check_written_members

import builder.writers.initrd as initrd_writer
from builder.cache import SegmentCache, cache_key
from builder.checks.written import DamagedMembers
from builder.closure import Closure, StoreFS, StorePath
from builder.errors import NetbuildError
from builder.formats.compress import parse_compression
from builder.formats.nar import hash_path
from builder.writers import frames
from builder.writers.members import InitrdResult


def _commit(cache: SegmentCache, key: str, blob: bytes) -> None:
    writer = cache.writer(key)
    assert writer is not None and writer.file is not None
    writer.file.write(blob)
    writer.appended({"frames": [], "paths": []})


def _read(cache: SegmentCache, key: str) -> bytes | None:
    entry = cache.lookup(key)
    if entry is None:
        return None
    with entry.open_blob() as f:
        return f.read(entry.blob_size)


def test_an_entry_reads_back_as_written(tmp_path: Path) -> None:
    cache = SegmentCache(tmp_path)
    key = cache_key({"a": 1})
    assert _read(cache, key) is None
    _commit(cache, key, b"members" * 1000)
    assert _read(cache, key) == b"members" * 1000
    assert list(cache.build_dir.iterdir()) == []  # nothing left behind
    cache.close()
    assert list(cache.temp_dir.iterdir()) == []


@pytest.mark.parametrize("damage", ["flip-meta", "truncate", "empty"])
def test_a_damaged_entry_is_refused_and_dropped(tmp_path: Path, damage: str) -> None:
    # A damaged blob is not the cache's to find: it is found where it lands, by the initrd's
    # self-check (test_a_damaged_entry_is_rebuilt_not_shipped below).
    cache = SegmentCache(tmp_path)
    key = cache_key("damage")
    _commit(cache, key, bytes(range(256)) * 64)
    path = cache.entry_path(key)
    data = bytearray(path.read_bytes())
    if damage == "flip-meta":
        data[-60] ^= 1
    elif damage == "truncate":
        data = data[:-10]
    else:
        data = bytearray()
    path.write_bytes(data)
    assert _read(cache, key) is None
    assert not path.exists()


def test_pruning_drops_the_least_recently_used(tmp_path: Path) -> None:
    cache = SegmentCache(tmp_path, max_bytes=25_000)
    keys = [cache_key(i) for i in range(4)]
    for age, key in enumerate(keys):
        _commit(cache, key, os.urandom(10_000))
        os.utime(cache.entry_path(key), (1000 + age, 1000 + age))
    assert _read(cache, keys[0]) is not None  # a hit makes the oldest the most recently used
    cache.prune()
    assert [cache.entry_path(k).exists() for k in keys] == [True, False, False, True]


def test_writers_of_the_same_key_at_once_leave_one_whole_entry(tmp_path: Path) -> None:
    cache = SegmentCache(tmp_path)
    key = cache_key("shared")
    blob = os.urandom(200_000)
    threads = [threading.Thread(target=_commit, args=(SegmentCache(tmp_path), key, blob)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _read(cache, key) == blob


# --- under the writer ------------------------------------------------------------------------


def _store(root: Path, count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        path = f"/nix/store/{i:02d}{'x' * 30}-p{i}"
        disk = root / path.lstrip("/")
        (disk / "d").mkdir(parents=True)
        (disk / "d" / "file").write_bytes(rng.randbytes(rng.choice([100, 3000, 40_000])))
        (disk / "link").symlink_to("d/file")
        paths.append(path)
    return paths


def _closure(root: Path, paths: list[str]) -> Closure:
    return Closure([StorePath(p, *hash_path(root / p.lstrip("/")), ()) for p in paths], source="test")


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many groups and members from a small store: the same code paths as a big closure.
    monkeypatch.setattr(initrd_writer, "GROUP_TARGET", 30_000)
    monkeypatch.setattr(frames, "FRAME_TARGET", 20_000)


def _write(root: Path, closure: Closure, cache: SegmentCache | None, jobs: int = 2) -> tuple[bytes, object]:
    buffer = io.BytesIO()
    result = initrd_writer.write_initrd(buffer, closure=closure, store=StoreFS(root), init="/nix/store/x/init",
                                       compression=parse_compression("zstd:3"), jobs=jobs, cache=cache)
    return buffer.getvalue(), result


def _write_file(root: Path, closure: Closure, cache: SegmentCache | None, path: Path) -> InitrdResult:
    with open(path, "wb") as f:
        return initrd_writer.write_initrd(f, closure=closure, store=StoreFS(root), init="/nix/store/x/init",
                                          compression=parse_compression("zstd:3"), jobs=2, cache=cache)


@pytest.mark.usefixtures("small_groups")
def test_cold_warm_shared_and_disabled_give_the_same_bytes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    paths = _store(root, 24)
    closure = _closure(root, paths)
    disabled, _ = _write(root, closure, None)
    cold, cold_result = _write(root, closure, SegmentCache(tmp_path / "cache"))
    warm, warm_result = _write(root, closure, SegmentCache(tmp_path / "cache"), jobs=1)
    # Shared: the cache was filled by a build of another closure overlapping this one.
    shared_cache = SegmentCache(tmp_path / "shared")
    _write(root, _closure(root, paths[:12]), shared_cache)
    shared, shared_result = _write(root, closure, shared_cache, jobs=3)
    assert disabled == cold == warm == shared
    groups = cold_result.reused[1]  # type: ignore[attr-defined]
    assert groups > 3 and len(cold_result.members) > groups  # type: ignore[attr-defined]
    assert cold_result.reused == (0, groups)  # type: ignore[attr-defined]
    assert warm_result.reused == (groups, groups)  # type: ignore[attr-defined]
    assert 0 < shared_result.reused[0] < groups  # type: ignore[attr-defined]


@pytest.mark.usefixtures("small_groups")
def test_a_warm_build_does_not_read_the_store_and_no_cache_reads_it_all(tmp_path: Path) -> None:
    root = tmp_path / "store"
    paths = _store(root, 10)
    closure = _closure(root, paths)
    cache = SegmentCache(tmp_path / "cache")
    cold, _ = _write(root, closure, cache)
    # Change a file behind the closure's back: a warm build trusts the NAR hash it is given (store
    # paths are immutable) and ships what was verified before; without the cache the change is found.
    victim = root / paths[3].lstrip("/") / "d" / "file"
    victim.chmod(0o644)
    victim.write_bytes(b"changed")
    warm, _ = _write(root, closure, cache)
    assert warm == cold
    with pytest.raises(NetbuildError, match=f"{paths[3]}: NAR hash mismatch"):
        _write(root, closure, None)


@pytest.mark.usefixtures("small_groups")
def test_a_damaged_entry_is_rebuilt_not_shipped(tmp_path: Path) -> None:
    root = tmp_path / "store"
    closure = _closure(root, _store(root, 16))
    cache = SegmentCache(tmp_path / "cache")
    cold, result = _write(root, closure, cache)
    entries = sorted(cache.segments.glob("*/*.seg"))
    originals = {e: e.read_bytes() for e in entries}
    damaged = entries[::3]
    for index, entry in enumerate(damaged):
        data = bytearray(originals[entry])
        data[index * 7 % 50] ^= 0xFF  # inside the compressed members
        entry.write_bytes(data)
    # The writer copies entries without reading them; the self-check finds exactly the damaged
    # ones in what was written — the protocol build._write_initrd follows: drop them, write again.
    path = tmp_path / "initrd"
    copied = _write_file(root, closure, cache, path)
    with pytest.raises(DamagedMembers) as found:
        check_written_members(path, copied.members)
    keys = {m.cache_key for m in found.value.members}
    assert keys == {e.stem for e in damaged}
    for key in keys:
        cache.drop(key)  # type: ignore[arg-type]
    rebuilt = _write_file(root, closure, cache, path)
    assert check_written_members(path, rebuilt.members)[1] == hashlib.sha256(cold).hexdigest()
    assert rebuilt.reused[0] == result.reused[1] - len(damaged)  # type: ignore[index, attr-defined]
    assert {e: e.read_bytes() for e in entries} == originals  # written again, whole


@pytest.mark.usefixtures("small_groups")
def test_a_changed_path_recompresses_only_its_groups(tmp_path: Path) -> None:
    root = tmp_path / "store"
    paths = _store(root, 30)
    cache = SegmentCache(tmp_path / "cache")
    _, before = _write(root, _closure(root, paths), cache)
    # A rebuild where one path was replaced by another (a new store path, as Nix would make it).
    new = "/nix/store/15" + "y" * 30 + "-p15-new"
    (root / new.lstrip("/")).mkdir(parents=True)
    (root / new.lstrip("/") / "file").write_bytes(b"new contents")
    changed = sorted([p for p in paths if p != paths[15]] + [new])
    data, after = _write(root, _closure(root, changed), cache)
    reused, groups = after.reused  # type: ignore[attr-defined]
    assert groups - reused <= 2 and reused >= before.reused[1] - 3  # type: ignore[attr-defined]
    assert data == _write(root, _closure(root, changed), None)[0]


def test_the_output_does_not_depend_on_the_job_count(tmp_path: Path, small_groups: None) -> None:
    root = tmp_path / "store"
    closure = _closure(root, _store(root, 20))
    outputs = {_write(root, closure, None, jobs=j)[0] for j in (1, 2, 5)}
    assert len(outputs) == 1


@pytest.mark.usefixtures("small_groups")
def test_thousands_of_groups_do_not_need_thousands_of_open_files(tmp_path: Path) -> None:
    # Packing runs ahead of appending and a warm build looks up every group first: neither may keep
    # a file open per group (a default descriptor limit is 1024; here it is 96 for 150+ groups).
    import resource

    root = tmp_path / "store"
    closure = _closure(root, _store(root, 260))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
    try:
        cold, cold_result = _write(root, closure, SegmentCache(tmp_path / "cache"))
        warm, warm_result = _write(root, closure, SegmentCache(tmp_path / "cache"))
        spooled, _ = _write(root, closure, None)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    groups = cold_result.reused[1]  # type: ignore[attr-defined]
    assert groups > 120 and warm_result.reused == (groups, groups)  # type: ignore[attr-defined]
    assert cold == warm == spooled
