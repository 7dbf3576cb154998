"""`netbuild check` on an OUT made to hurt it: a manifest.json mutated hundreds of ways, artifacts
that are symlinks out of OUT, devices or FIFOs. Every case ends with exit status 0 or 1 and at most
one `error:` line, fast, and never a traceback; nothing outside OUT is read."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.cli import main

pytestmark = pytest.mark.nix

SEED = 15
MUTATIONS = 320
DEEP = 200_000  # far past Python's recursion limit


@pytest.fixture
def out(built_out: Path, tmp_path: Path) -> Path:
    copy_ = tmp_path / "out"
    shutil.copytree(built_out, copy_)
    return copy_


def run_check(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """`netbuild check OUT` in-process: (exit status, stderr, seconds). Any exception but SystemExit
    escaping main() fails the test with its traceback."""
    start = time.monotonic()
    try:
        main(["check", str(out)])
        status = 0
    except SystemExit as e:
        status = int(e.code or 0)
    elapsed = time.monotonic() - start
    return status, capsys.readouterr().err, elapsed


def reseal(out: Path, data: bytes) -> None:
    """Write manifest.json and its line in SHA256SUMS, so that the mutation is read, not just its digest."""
    (out / "manifest.json").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    lines = [f"{digest}  manifest.json" if line.endswith("  manifest.json") else line
             for line in (out / "SHA256SUMS").read_text().splitlines()]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")


_DEEP_MARK = "\x01deep\x01"
_REPLACEMENTS: list[Any] = [
    None, True, False, 0, -1, 1, -(2**63), 2**64, 10**30, "x", "", "a\0b", "\udcff"[:0] + "é",
    [], {}, [1, 2], {"a": 1}, math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5,
    "x" * 200_000, _DEEP_MARK, "/etc/shadow", "../../etc/shadow", "/dev/zero",
]


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*at, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*at, index))


def _mutate(doc: Any, rng: random.Random) -> bytes:
    doc = copy.deepcopy(doc)
    paths = list(_paths(doc))[1:]
    path = rng.choice(paths)
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    op = rng.randrange(5)
    if op == 0:  # delete it
        del parent[last]
    elif op == 1 and isinstance(parent, dict):  # rename its key: NUL, path, long
        parent[rng.choice(["a\0b", "../x", "/etc/shadow", "", "k" * 10_000, "bzImage\0"])] = parent.pop(last)
    else:  # swap its value for another type, size or sign
        parent[last] = rng.choice(_REPLACEMENTS)
    text = json.dumps(doc, allow_nan=True)
    return text.replace(json.dumps(_DEEP_MARK), "[" * DEEP + "]" * DEEP).encode()


def _raw(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: truncation, a byte flipped, invalid UTF-8, a whole other JSON value."""
    op = rng.randrange(4)
    if op == 0:
        return data[: rng.randrange(len(data))]
    if op == 1:
        at = rng.randrange(len(data))
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    if op == 2:
        return b'{"netbuild": "\xff\xfe"}'
    return rng.choice([b"[]", b"null", b"1e999999", b"9" * 100_000, b'{"netbuild": {}}', b"{" * DEEP])


def test_hundreds_of_manifest_mutations_each_give_one_line_fast(
    out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = (out / "manifest.json").read_bytes()
    doc = json.loads(original)
    rng = random.Random(SEED)
    statuses = {0: 0, 1: 0}
    slowest = 0.0
    for number in range(MUTATIONS):
        data = _raw(original, rng) if number % 8 == 7 else _mutate(doc, rng)
        reseal(out, data)
        status, stderr, elapsed = run_check(out, capsys)
        assert "Traceback" not in stderr, (number, stderr)
        assert status in (0, 1), (number, status, stderr)
        if status == 1:
            assert stderr.startswith("error: ") and stderr.count("\n") == 1, (number, stderr[:2000])
        assert elapsed < 1.0, (number, elapsed)
        statuses[status] += 1
        slowest = max(slowest, elapsed)
    assert statuses[1] > MUTATIONS // 2  # most mutations must be caught, not waved through
    print(f"{MUTATIONS} mutations: {statuses[1]} refused, {statuses[0]} passed; slowest {slowest:.3f} s")


@pytest.mark.parametrize(("field", "value"), [(f, v) for f in ("offset", "size", "uncompressedSize", "entries")
                                               for v in (2**63 - 1, 2**62, 2**63, -1, 10**400 // 10**399)])
def test_members_placed_past_the_end_of_the_file_are_refused_before_reading(
    out: Path, capsys: pytest.CaptureFixture[str], field: str, value: int
) -> None:
    doc = json.loads((out / "manifest.json").read_bytes())
    for member in doc["initrd"]["members"]:
        member[field] = value
    reseal(out, json.dumps(doc).encode())
    status, stderr, elapsed = run_check(out, capsys)
    assert status == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert elapsed < 1.0


@pytest.mark.parametrize("hostile", ["symlink-out", "dev-zero", "fifo", "directory"])
@pytest.mark.parametrize("name", ["bzImage", "initrd", "kernel-params", "manifest.json", "SHA256SUMS"])
def test_an_artifact_that_is_not_a_regular_file_of_out_is_refused_fast(
    out: Path, capsys: pytest.CaptureFixture[str], hostile: str, name: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 12345)  # its size must not show
    (out / name).unlink()
    if hostile == "symlink-out":
        (out / name).symlink_to(secret)
    elif hostile == "dev-zero":
        (out / name).symlink_to("/dev/zero")
    elif hostile == "fifo":
        os.mkfifo(out / name)
    else:
        (out / name).mkdir()
    status, stderr, elapsed = run_check(out, capsys)
    assert status == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "12345" not in stderr and "Traceback" not in stderr
    assert "not a regular file" in stderr, stderr
    assert elapsed < 2.0


def test_an_iso_in_out_that_is_a_symlink_is_not_read(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (out / "system.iso").symlink_to("/dev/zero")
    status, stderr, _ = run_check(out, capsys)
    assert status == 1 and stderr.startswith("error: ") and "not a regular file" in stderr, stderr


@pytest.mark.parametrize("target", ["fifo", "/proc/self/status", "/dev/zero"])
def test_inspect_on_a_fifo_or_a_proc_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    if target == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    else:
        path = Path(target)
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", str(path)])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert time.monotonic() - start < 2.0
