from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.formats.nar import (
    NarEncoder,
    NarError,
    NarHasher,
    Node,
    NodeKind,
    dump,
    hash_path,
    nar_string,
    read_contents,
    walk,
)
from builder.formats.nixhash import format_sri

NIX_ENV = {
    **os.environ,
    "NIX_CONFIG": "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is required for these tests (Debian package nix-bin)"
    return path


def nix_store_dump(path: Path) -> bytes:
    return subprocess.run([tool("nix-store"), "--dump", str(path)], env=NIX_ENV, check=True,
                          capture_output=True).stdout


def nix_hash_path(path: Path) -> str:
    result = subprocess.run([tool("nix"), "hash", "path", "--sri", str(path)], env=NIX_ENV, check=True,
                            capture_output=True, text=True)
    return result.stdout.strip()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c").write_bytes(b"nested\n")
    (root / "a.b").write_bytes(b"sorts after a/...")
    (root / "A").write_bytes(b"upper case sorts first")
    (root / "b").write_bytes(b"")  # empty file
    (root / "empty-dir").mkdir()
    (root / "exec").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "exec").chmod(0o755)
    (root / "other-x").write_bytes(b"only o+x")
    (root / "other-x").chmod(0o645)  # Nix looks at the owner's x bit only
    (root / "odd").write_bytes(b"x" * 13)  # not a multiple of 8
    (root / "big").write_bytes(os.urandom(3 << 19) + b"tail")  # 1.5 MiB + 4: spans chunk boundaries
    (root / "rel-link").symlink_to("a/b/c")
    (root / "abs-link").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "dir-link").symlink_to("a")
    (root / "caf\u00e9").write_bytes("caf\u00e9 contents".encode("utf-8"))
    (root / "with space").write_bytes(b"space")
    (root / os.fsdecode(b"raw\xff")).write_bytes(b"not utf-8")
    # By bytes 'z\xee\x80\x80' (U+E000) < 'z\xff'; as decoded str '\ue000' > '\udcff': catches str sorting.
    (root / "z\ue000").write_bytes(b"private use")
    (root / os.fsdecode(b"z\xff")).write_bytes(b"raw byte")
    return root


def test_walk_order_is_nar_byte_order(tree: Path) -> None:
    nodes = list(walk(tree))
    relpaths = [node.relpath for node in nodes]
    assert relpaths[0] == ""
    assert relpaths.index("a/b/c") < relpaths.index("a.b")  # component order, not string order
    expected = sorted(relpaths[1:], key=lambda rel: [os.fsencode(part) for part in rel.split("/")])
    assert relpaths[1:] == expected
    assert relpaths[:6] == ["", "A", "a", "a/b", "a/b/c", "a.b"]
    by_rel = {node.relpath: node for node in nodes}
    assert by_rel["exec"].executable and not by_rel["other-x"].executable
    assert by_rel["big"].size == (3 << 19) + 4 and by_rel["b"].size == 0
    assert by_rel["dir-link"].kind is NodeKind.SYMLINK and by_rel["dir-link"].target == b"a"
    assert by_rel["dangling"].target == b"/nonexistent/target"
    assert by_rel["a"].kind is NodeKind.DIRECTORY and by_rel[""].path == str(tree)
    assert os.fsencode(by_rel[os.fsdecode(b"raw\xff")].path).endswith(b"raw\xff")
    assert "a/b/c" not in {node.relpath for node in walk(tree / "dir-link")}  # symlinks are not followed


@pytest.mark.nix
@pytest.mark.parametrize("chunk_size", [1 << 20, 4096, 7])
def test_dump_is_byte_identical_to_nix_store(tree: Path, chunk_size: int) -> None:
    if chunk_size == 7:
        (tree / "big").write_bytes(os.urandom(5000))  # keep the tiny-chunk case fast
    assert b"".join(dump(tree, chunk_size)) == nix_store_dump(tree)


@pytest.mark.nix
def test_hash_matches_nix_hash_path(tree: Path) -> None:
    digest, size = hash_path(tree)
    expected = nix_store_dump(tree)
    assert format_sri(digest) == nix_hash_path(tree)
    assert (digest, size) == (hashlib.sha256(expected).digest(), len(expected))


@pytest.mark.nix
def test_root_that_is_a_file(tmp_path: Path) -> None:
    for name, mode in (("plain", 0o644), ("script", 0o755)):
        path = tmp_path / name
        path.write_bytes(b"a store path can be a single file")
        path.chmod(mode)
        assert [node.relpath for node in walk(path)] == [""]
        assert b"".join(dump(path)) == nix_store_dump(path)
        assert format_sri(hash_path(path)[0]) == nix_hash_path(path)


@pytest.mark.nix
def test_root_that_is_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "target-dir").mkdir()
    link = tmp_path / "link"
    link.symlink_to("target-dir")
    nodes = list(walk(link))
    assert [(node.kind, node.target) for node in nodes] == [(NodeKind.SYMLINK, b"target-dir")]
    assert b"".join(dump(link)) == nix_store_dump(link)
    assert format_sri(hash_path(link)[0]) == nix_hash_path(link)


@pytest.mark.nix
def test_empty_directory_root(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert b"".join(dump(tmp_path / "empty")) == nix_store_dump(tmp_path / "empty")


def test_fifo_is_rejected_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "pipe")
    with pytest.raises(NarError, match=r"d/pipe: not a directory"):
        list(walk(tmp_path / "d"))


def test_nar_string_padding() -> None:
    assert nar_string(b"") == b"\0" * 8
    assert nar_string(b"abc") == b"\x03" + b"\0" * 7 + b"abc" + b"\0" * 5
    assert len(nar_string(b"x" * 8)) == 16


def test_hasher_agrees_with_encoder_fed_from_one_walk(tree: Path) -> None:
    # The initrd packer's pattern: one walk, the same nodes and chunks to two consumers.
    pieces: list[bytes] = []
    encoder, hasher = NarEncoder(pieces.append), NarHasher()
    for node in walk(tree):
        encoder.node(node)
        hasher.node(node)
        if node.kind is NodeKind.REGULAR:
            for chunk in read_contents(node, 65536):
                encoder.data(chunk)
                hasher.data(chunk)
    encoder.finish()
    nar = b"".join(pieces)
    assert hasher.finish() == (hashlib.sha256(nar).digest(), len(nar))


def file_node(tmp_path: Path, relpath: str, size: int) -> Node:
    return Node(tmp_path / relpath, relpath, NodeKind.REGULAR, False, size, b"")


def dir_node(tmp_path: Path, relpath: str) -> Node:
    return Node(tmp_path / relpath, relpath, NodeKind.DIRECTORY, False, 0, b"")


def test_encoder_rejects_too_many_bytes(tmp_path: Path) -> None:
    encoder = NarEncoder(lambda _: None)
    encoder.node(file_node(tmp_path, "", 3))
    with pytest.raises(NarError, match="more contents"):
        encoder.data(b"four")


def test_encoder_rejects_missing_bytes_at_finish(tmp_path: Path) -> None:
    encoder = NarEncoder(lambda _: None)
    encoder.node(dir_node(tmp_path, ""))
    encoder.node(file_node(tmp_path, "f", 3))
    encoder.data(b"ab")
    with pytest.raises(NarError, match="1 bytes of contents missing"):
        encoder.finish()


def test_encoder_rejects_bad_streams(tmp_path: Path) -> None:
    encoder = NarEncoder(lambda _: None)
    with pytest.raises(NarError, match="first node must be the root"):
        encoder.node(dir_node(tmp_path, "a"))

    encoder = NarEncoder(lambda _: None)
    encoder.node(dir_node(tmp_path, ""))
    encoder.node(file_node(tmp_path, "b", 0))
    with pytest.raises(NarError, match="out of NAR"):
        encoder.node(file_node(tmp_path, "a", 0))
    with pytest.raises(NarError, match="does not follow its parent"):
        encoder.node(file_node(tmp_path, "x/y", 0))

    encoder = NarEncoder(lambda _: None)
    encoder.node(file_node(tmp_path, "", 0))
    with pytest.raises(NarError, match="after the root"):
        encoder.node(file_node(tmp_path, "a", 0))


def test_read_contents_detects_a_file_that_changed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    (node,) = walk(path)
    path.write_bytes(b"123")
    with pytest.raises(NarError, match="shrank"):
        list(read_contents(node))
    path.write_bytes(b"1234567")
    with pytest.raises(NarError, match="grew"):
        list(read_contents(node))
