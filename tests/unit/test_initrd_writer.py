"""The initrd writer and its self-check on a small store made in a temporary directory."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from support.initrd import initrd_entries, initrd_members

from builder.checks.selfcheck import check_initrd
from builder.closure import Closure, StoreFS, StorePath, VerifiedPath
from builder.errors import NetbuildError
from builder.footprint import store_rootfs_bytes
from builder.formats.compress import parse_compression
from builder.formats.nar import hash_path
from builder.preinit import preinit_program
from builder.writers.initrd import write_initrd

A = "/nix/store/" + "a" * 32 + "-app"
B = "/nix/store/" + "b" * 32 + "-lib"


def make_store(root: Path) -> None:
    app = root / A.lstrip("/")
    (app / "bin").mkdir(parents=True)
    (app / "bin" / "run").write_text(f"#!{B}/sh\n")
    (app / "bin" / "run").chmod(0o755)
    (app / "lib").symlink_to(f"{B}")
    lib = root / B.lstrip("/")
    lib.mkdir(parents=True)
    (lib / "data").write_bytes(bytes(range(256)) * 100)
    (lib / "data").chmod(0o600)  # not a store mode: the archive must still say 0444


def closure_for(root: Path, *, with_hashes: bool) -> Closure:
    def sp(path: str, refs: tuple[str, ...]) -> StorePath:
        digest, size = hash_path(root / path.lstrip("/"))
        return StorePath(path, digest if with_hashes else None, size if with_hashes else None, refs)

    return Closure([sp(A, (B,)), sp(B, ())], source="test")


def build(root: Path, closure: Closure, compress: str = "zstd") -> tuple[bytes, object]:
    buffer = io.BytesIO()
    result = write_initrd(buffer, closure=closure, store=StoreFS(root), init=f"{A}/bin/run",
                          compression=parse_compression(compress), jobs=2)
    return buffer.getvalue(), result


@pytest.mark.parametrize("compress", ["zstd", "gzip", "xz", "none"])
def test_written_archive_checks_and_carries_the_store(tmp_path: Path, compress: str) -> None:
    make_store(tmp_path)
    data, result = build(tmp_path, closure_for(tmp_path, with_hashes=True), compress)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(data)
    check_initrd(initrd, result.members)
    members = initrd_members(data)
    assert {codec for codec, _ in members} == {"cpio" if compress == "none" else compress}
    entries = initrd_entries(data)
    assert entries[f"{B[1:]}/data"].mode & 0o7777 == 0o444
    assert entries[f"{A[1:]}/bin/run"].mode & 0o7777 == 0o555
    assert entries[f"{A[1:]}/lib"].data == B.encode()
    # /init: netbuild's preinit, which runs init= (or this default) on a root where pivot_root works
    assert entries["init"].data == preinit_program(f"{A}/bin/run") and entries["init"].mode == 0o100555
    assert list(entries)[-1] == "nix/store/nix-path-registration"
    assert entries["nix/store/nix-path-registration"].data == result.registration


def test_missing_hashes_are_computed(tmp_path: Path) -> None:
    make_store(tmp_path)
    _, with_hashes = build(tmp_path, closure_for(tmp_path, with_hashes=True))
    _, computed = build(tmp_path, closure_for(tmp_path, with_hashes=False))
    assert computed.verified == with_hashes.verified


def test_a_modified_store_path_is_refused(tmp_path: Path) -> None:
    make_store(tmp_path)
    closure = closure_for(tmp_path, with_hashes=True)
    (tmp_path / B.lstrip("/") / "data").write_bytes(b"tampered")
    with pytest.raises(NetbuildError, match=f"{B}: NAR hash mismatch"):
        build(tmp_path, closure)


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_self_check_catches_a_damaged_initrd(tmp_path: Path, compress: str) -> None:
    make_store(tmp_path)
    data, result = build(tmp_path, closure_for(tmp_path, with_hashes=True), compress)
    expected = result.members
    for damage in (data[:-7], data + b"junk", data[:300] + bytes([data[300] ^ 1]) + data[301:]):
        initrd = tmp_path / "initrd"
        initrd.write_bytes(damage)
        with pytest.raises(NetbuildError, match="self-check: initrd"):
            check_initrd(initrd, expected)


def test_a_file_of_4_gib_is_an_error_naming_it(tmp_path: Path) -> None:
    make_store(tmp_path)
    big = tmp_path / B.lstrip("/") / "huge.img"
    with open(big, "wb") as f:
        f.truncate(1 << 32)  # sparse: costs no disk
    closure = Closure([StorePath(A, None, None, (B,)), StorePath(B, None, None, ())], source="test")
    with pytest.raises(NetbuildError) as err:
        build(tmp_path, closure)
    assert str(err.value).startswith(f"{B}: ") and "huge.img" in str(err.value), err.value


def test_names_that_are_not_utf8_pass_through_byte_for_byte(tmp_path: Path) -> None:
    make_store(tmp_path)
    odd = b"caf\xe9 \xff.txt"  # Latin-1 bytes: not UTF-8, still a valid file name in a store path
    with open(os.path.join(os.fsencode(tmp_path / B.lstrip("/")), odd), "wb") as f:
        f.write(b"odd")
    data, _ = build(tmp_path, closure_for(tmp_path, with_hashes=True))
    names = [os.fsencode(name) for name in initrd_entries(data)]
    assert os.fsencode(B.lstrip("/")) + b"/" + odd in names


def test_the_writer_counts_each_paths_tmpfs_pages_as_a_walk_does(tmp_path: Path) -> None:
    """The boot memory's input: counted while packing (no second walk), the same as walking it."""
    make_store(tmp_path)
    (tmp_path / B.lstrip("/") / "long-link").symlink_to("x" * 200)  # too long to live in the inode
    _, result = build(tmp_path, closure_for(tmp_path, with_hashes=False))
    counted = {p.path: p.rootfs_bytes for p in result.verified}  # type: ignore[attr-defined]
    walked = {p: store_rootfs_bytes(StoreFS(tmp_path), [VerifiedPath(p, bytes(32), 0, ())], None) for p in (A, B)}
    assert counted == walked
    files = [f for f in (tmp_path / B.lstrip("/")).rglob("*") if f.is_file() and not f.is_symlink()]
    assert walked[B] == sum(-(-f.stat().st_size // 4096) * 4096 for f in files) + 4096  # + the long link
