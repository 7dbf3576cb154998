"""NAR (Nix ARchive): walk a file tree in NAR order and serialise it, streaming.

The encoder is driven by the node stream alone so that one walk of a store path can feed both the
NAR hasher and the cpio writer (the initrd packer verifies narHash while it packs).
"""

from __future__ import annotations

import enum
import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.formats import CHUNK, Buffer
from builder.formats.declared import DeclaredContents

NAR_MAGIC = b"nix-archive-1"
# The modes a store path's entries have in the store, and so in every image netbuild makes of it: a
# NAR records only whether a file is executable, so anything else a copy of the store happens to
# carry (umask, a cp without -p) is not part of the path's identity.
DIR_MODE, FILE_MODE, EXEC_MODE = 0o555, 0o444, 0o555




class NarError(ValueError):
    """A tree that cannot be serialised as a NAR, or an encoder fed an impossible node stream."""


class NodeKind(enum.Enum):
    DIRECTORY = "directory"
    REGULAR = "regular"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class Node:
    path: str  # absolute path on disk (a str: a Path per node costs more than the node's header)
    relpath: str  # '' for the root, else 'a/b/c' relative to the root (fsdecoded, surrogateescape)
    kind: NodeKind
    executable: bool  # regular files: the owner x bit, the one bit Nix looks at
    size: int  # regular files: byte length, else 0
    target: bytes  # symlinks: the raw link target, else b''

    @property
    def depth(self) -> int:
        return self.relpath.count("/") + 1 if self.relpath else 0

    @property
    def name(self) -> bytes:
        """The entry name in its parent directory as raw bytes (b'' for the root)."""
        return os.fsencode(self.relpath.rpartition("/")[2])


def _node(path: str, relpath: str) -> Node:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        return Node(path, relpath, NodeKind.DIRECTORY, False, 0, b"")
    if stat.S_ISREG(st.st_mode):
        return Node(path, relpath, NodeKind.REGULAR, bool(st.st_mode & stat.S_IXUSR), st.st_size, b"")
    if stat.S_ISLNK(st.st_mode):
        return Node(path, relpath, NodeKind.SYMLINK, False, 0, os.readlink(os.fsencode(path)))
    raise NarError(f"{path}: not a directory, regular file or symlink (mode {st.st_mode:o})")


def _sorted_names(directory: str) -> list[bytes]:
    # NAR orders entries by their name bytes, so 'a' (and everything under it) precedes 'a.b'.
    return sorted(os.listdir(os.fsencode(directory)))


def walk(root: Path | str) -> Iterator[Node]:
    """The root, then every node below it, pre-order depth-first in NAR order; never follows symlinks."""
    top = _node(os.path.abspath(root), "")
    yield top
    if top.kind is not NodeKind.DIRECTORY:
        return
    # An explicit stack instead of recursion: store trees can be deeper than Python's recursion limit.
    pending: list[tuple[Node, Iterator[bytes]]] = [(top, iter(_sorted_names(top.path)))]
    while pending:
        parent, names = pending[-1]
        name = next(names, None)
        if name is None:
            pending.pop()
            continue
        decoded = os.fsdecode(name)
        child = _node(f"{parent.path}/{decoded}", f"{parent.relpath}/{decoded}" if parent.relpath else decoded)
        yield child
        if child.kind is NodeKind.DIRECTORY:
            pending.append((child, iter(_sorted_names(child.path))))


def nar_string(data: bytes) -> bytes:
    """A NAR string: u64 little-endian length, the bytes, NUL padding to a multiple of 8."""
    return struct.pack("<Q", len(data)) + data + _padding(len(data))


def _padding(length: int) -> bytes:
    return b"\0" * (-length % 8)


_OPEN = nar_string(b"(")
_CLOSE = nar_string(b")")
_TYPE = nar_string(b"type")
_ENTRY_OPEN = nar_string(b"entry") + _OPEN + nar_string(b"name")
_NODE = nar_string(b"node")
_REGULAR = _OPEN + _TYPE + nar_string(b"regular")
_EXECUTABLE = nar_string(b"executable") + nar_string(b"")
_CONTENTS = nar_string(b"contents")
_SYMLINK = _OPEN + _TYPE + nar_string(b"symlink") + nar_string(b"target")
_DIRECTORY = _OPEN + _TYPE + nar_string(b"directory")


@dataclass(slots=True)
class _OpenDirectory:
    relpath: str
    depth: int
    last_name: bytes | None = None


class NarEncoder:
    """Serialises a node stream from walk() (plus each regular file's contents via data()) as a NAR."""

    def __init__(self, write: Callable[[Buffer], None]) -> None:
        self._write = write
        self._started = False
        self._finished = False
        self._root_done = False  # a non-directory root admits no further nodes
        self._directories: list[_OpenDirectory] = []
        self._contents: DeclaredContents[Node] = DeclaredContents(  # the open regular file
            lambda node: NarError(f"{node.path if node else 'no open file'}: more contents than the file's size"))

    def node(self, node: Node) -> None:
        if self._finished:
            raise NarError(f"{node.path}: node after finish()")
        if (open_file := self._contents.entry) is not None:
            raise NarError(f"{node.path}: node begun while {open_file.path} lacks {self._contents.remaining} bytes")
        out = bytearray()
        if not self._started:
            if node.relpath:
                raise NarError(f"{node.path}: first node must be the root (relpath ''), got {node.relpath!r}")
            self._started = True
            out += nar_string(NAR_MAGIC)
        else:
            out += self._enter_parent_of(node)
            out += _ENTRY_OPEN + nar_string(node.name) + _NODE
        if node.kind is NodeKind.DIRECTORY:
            out += _DIRECTORY
            self._directories.append(_OpenDirectory(node.relpath, node.depth))
        elif node.kind is NodeKind.SYMLINK:
            out += _SYMLINK + nar_string(node.target) + self._close_leaf(node)
        else:
            out += _REGULAR + (_EXECUTABLE if node.executable else b"") + _CONTENTS
            out += struct.pack("<Q", node.size)
            if node.size:
                self._contents.open(node, node.size)
            else:
                out += self._close_leaf(node)
        self._write(bytes(out))

    def _enter_parent_of(self, node: Node) -> bytes:
        """Close the directories the stream has left, then check the node belongs in the one on top."""
        if self._root_done or not self._directories:
            raise NarError(f"{node.path}: node after the root was complete")
        closing = bytearray()
        while self._directories and self._directories[-1].depth >= node.depth:
            closing += self._close_directory()
        parent = self._directories[-1] if self._directories else None
        expected_parent = node.relpath.rpartition("/")[0]
        if parent is None or parent.relpath != expected_parent:
            raise NarError(f"{node.path}: {node.relpath!r} does not follow its parent directory")
        name = node.name
        if parent.last_name is not None and name <= parent.last_name:
            raise NarError(f"{node.path}: entry {node.relpath!r} out of NAR (byte) order or repeated")
        parent.last_name = name
        return bytes(closing)

    def _close_directory(self) -> bytes:
        directory = self._directories.pop()
        if directory.depth == 0:
            self._root_done = True
            return _CLOSE
        return _CLOSE + _CLOSE  # the directory node, then its 'entry (' wrapper

    def _close_leaf(self, node: Node) -> bytes:
        if node.depth == 0:
            self._root_done = True
            return _CLOSE
        return _CLOSE + _CLOSE

    def data(self, chunk: Buffer) -> None:
        if not chunk:
            return
        completed = self._contents.take(len(chunk))
        self._write(chunk)
        if completed is not None:
            self._write(_padding(completed.size) + self._close_leaf(completed))

    def finish(self) -> None:
        if (open_file := self._contents.entry) is not None:
            raise NarError(f"{open_file.path}: {self._contents.remaining} bytes of contents missing at finish()")
        if not self._started:
            raise NarError("finish() before any node: a NAR needs a root")
        if self._finished:
            return
        out = bytearray()
        while self._directories:
            out += self._close_directory()
        self._finished = True
        if out:
            self._write(bytes(out))


class NarHasher:
    """A NarEncoder feeding sha256 and a byte count: the narHash and narSize of the node stream."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._encoder = NarEncoder(self._update)

    def _update(self, data: Buffer) -> None:
        self._sha256.update(data)
        self._size += len(data)

    def node(self, node: Node) -> None:
        self._encoder.node(node)

    def data(self, chunk: Buffer) -> None:
        self._encoder.data(chunk)

    def finish(self) -> tuple[bytes, int]:
        self._encoder.finish()
        return self._sha256.digest(), self._size


def read_contents(node: Node, chunk_size: int = CHUNK, buffer: bytearray | None = None) -> Iterator[Buffer]:
    """A regular file's contents in chunks, exactly node.size bytes, or NarError if it changed size.

    With a buffer, each chunk is a view of it, valid until the next is asked for: no allocation
    per chunk (each fresh megabyte costs page faults that, on a small VM, exceed the read itself)."""
    remaining = node.size
    view = memoryview(buffer) if buffer is not None else None
    with open(node.path, "rb", buffering=0) as file:
        while remaining:
            if view is not None:
                got = file.readinto(view[: min(len(view), remaining)])
                chunk: Buffer = view[:got]
            else:
                chunk = file.read(min(chunk_size, remaining))
                got = len(chunk)
            if not got:
                raise NarError(f"{node.path}: shrank while read ({remaining} of {node.size} bytes missing)")
            remaining -= got
            yield chunk
        if file.read(1):
            raise NarError(f"{node.path}: grew while being read (walked size {node.size})")


def dump(root: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The whole NAR of root, as `nix-store --dump` writes it, in pieces."""
    pieces: list[bytes] = []
    encoder = NarEncoder(lambda piece: pieces.append(bytes(piece)))
    for node in walk(root):
        encoder.node(node)
        if node.kind is NodeKind.REGULAR:
            for chunk in read_contents(node, chunk_size):
                encoder.data(chunk)
                yield from pieces
                pieces.clear()
        yield from pieces
        pieces.clear()
    encoder.finish()
    yield from pieces


def hash_path(root: Path) -> tuple[bytes, int]:
    """(sha256 digest, narSize) of root, as `nix hash path` computes the former."""
    hasher = NarHasher()
    for node in walk(root):
        hasher.node(node)
        if node.kind is NodeKind.REGULAR:
            for chunk in read_contents(node):
                hasher.data(chunk)
    return hasher.finish()


def _string_size(length: int) -> int:
    return 8 + length + (-length % 8)


_S_OPEN = _string_size(1)  # "(" and ")" have the same size
_S_TYPE = _string_size(4)


def nar_size(root: Path) -> int:
    """narSize of root from its metadata alone (lstat and directory listings, no file contents):
    what hash_path would count, at a fraction of the cost, for planning before packing."""
    total = _string_size(len(NAR_MAGIC))
    for node in walk(root):
        if node.relpath:  # entry ( name <name> node <node> )
            total += _string_size(5) + _S_OPEN + _string_size(4) + _string_size(len(node.name)) + _string_size(4)
            total += _S_OPEN  # the entry's closing paren
        total += _S_OPEN + _S_TYPE + _S_OPEN  # ( type <kind> … )
        if node.kind is NodeKind.DIRECTORY:
            total += _string_size(len("directory"))
        elif node.kind is NodeKind.SYMLINK:
            total += _string_size(len("symlink")) + _string_size(len("target")) + _string_size(len(node.target))
        else:
            total += _string_size(len("regular"))
            if node.executable:
                total += _string_size(len("executable")) + _string_size(0)
            total += _string_size(len("contents")) + _string_size(node.size)
    return total
