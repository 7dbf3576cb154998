"""What `netbuild serve` exposes, and how a URL path becomes a file it may open.

A served tree is written by netbuild but lives on a machine where anything may appear in it: a
symlink out of it (refused like `..`), a symlink loop (no file at its end), a FIFO (opening one
for reading blocks until a writer comes: one request would hang a thread for ever), a device or a
socket. Only regular files and directories are served; everything else is refused with a reason,
decided from stat before anything is opened, and files are opened O_NONBLOCK in case one is
swapped for a FIFO between the stat and the open.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from builder.errors import NetbuildError


class Refused(Exception):
    """The path names something outside the served directories (→ 403)."""


class Missing(Exception):
    """Nothing there (→ 404)."""


class Unservable(Exception):
    """Something is there but it is not a file to send: a FIFO, a device, a socket, a symlink loop,
    a file the server may not read (→ 403, with the reason)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class File:
    path: str  # resolved, inside a served directory
    name: str  # its base name, for the Content-Type
    stat: os.stat_result  # as locate() found it (the file is opened later, if at all)
    # The directories below the served one it was found through, each looked at with lstat; None
    # if a symlink was met on the way (its target was resolved instead).
    through: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Listing:
    names: list[str]  # directories end in '/'


@dataclass(frozen=True)
class ServedTree:
    """What the server exposes: URL prefix ('' for the root) → real directory."""

    roots: Mapping[str, Path]

    @classmethod
    def of(cls, directories: list[Path]) -> ServedTree:
        for d in directories:
            if not d.is_dir():
                raise NetbuildError(f"{d}: not a directory")
        if len(directories) == 1:
            return cls({"": directories[0].resolve()})
        roots: dict[str, Path] = {}
        for d in directories:
            name = d.resolve().name
            if name in roots:
                raise NetbuildError(
                    f"{d}: another directory is also named {name!r}; directories served side by side need "
                    "distinct names"
                )
            roots[name] = d.resolve()
        return cls(roots)

    def locate(self, url_path: str) -> File | Listing:
        """The file or directory listing a URL path names; raises Refused, Missing or Unservable."""
        segments = [unquote(s) for s in url_path.split("/") if s]
        if any(s in (".", "..") or "/" in s or "\0" in s for s in segments):
            raise Refused
        if "" in self.roots:
            root, rest = self.roots[""], segments
        elif not segments:
            return Listing([f"{name}/" for name in sorted(self.roots)])
        elif segments[0] in self.roots:
            root, rest = self.roots[segments[0]], segments[1:]
        else:
            raise Missing
        top = str(root)
        resolved, st, through = _resolve_below(top, rest)
        # A symlink inside OUT that points out of it is refused like `..` (even a dangling one): the
        # client named a file outside what was meant to be served.
        if resolved != top and not resolved.startswith(top.rstrip("/") + "/"):
            raise Refused
        if st is None:  # a symlink on the way: what it leads to
            try:
                st = os.stat(resolved)
            except (FileNotFoundError, NotADirectoryError):
                raise Missing from None
            except OSError as e:  # ELOOP: a symlink loop; EACCES: a directory on the way we may not enter
                raise Unservable(e.strerror or "cannot look it up") from None
        if stat.S_ISDIR(st.st_mode):
            return Listing(_listing(resolved))
        if not stat.S_ISREG(st.st_mode):
            raise Unservable(f"not a regular file ({_kind(st.st_mode)})")
        return File(resolved, os.path.basename(resolved), st, through)


def _resolve_below(top: str, rest: list[str]) -> tuple[str, os.stat_result | None, tuple[str, ...] | None]:
    """top/rest with symlinks resolved; if no symlink was met on the way, its lstat and the
    directories passed through. One lstat per segment below the root (already resolved), and
    os.path.realpath only from the first symlink on: a request costs a few microseconds, not a
    realpath of the whole path. A symlink loop is left for os.stat to report (ELOOP)."""
    path = top
    st = None
    through: list[str] = []
    for i, segment in enumerate(rest):
        if i:
            through.append(path)
        path = os.path.join(path, segment)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise Missing from None
        except OSError as e:
            raise Unservable(e.strerror or "cannot look it up") from None
        if stat.S_ISLNK(st.st_mode):
            return os.path.realpath(os.path.join(path, *rest[i + 1:])), None, None
    return path, st, tuple(through)


def _listing(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as it:
            return sorted(e.name + ("/" if _is_dir(e) else "") for e in it)
    except OSError as e:
        raise Unservable(e.strerror or "cannot list it") from None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: listed as what it is, a name with no directory behind it
        return False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def open_file(found: File) -> tuple[int, os.stat_result]:
    """A descriptor for reading the file and its stat. O_NONBLOCK: if the file was replaced by a
    FIFO since locate() looked, opening it does not wait for a writer, and fstat refuses it."""
    try:
        fd = os.open(found.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise Unservable(e.strerror or "cannot open") from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise Unservable(e.strerror or "cannot open") from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Unservable(f"not a regular file ({_kind(st.st_mode)})")
    return fd, st
