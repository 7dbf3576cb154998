"""The store digest: what the test guest's init prints (tests/fixtures/init.sh), computed on the
host from the closure that should have landed in the guest's /nix/store.

One line per entry under /nix/store (not /nix/store itself), sorted by path bytes:

    d <path>                        a directory
    l <path> <target>               a symlink (target as stored, never followed)
    f <path> <x|-> <sha256 hex>     a regular file; x when any execute bit is set

The digest is the sha256 (hex) of those lines, each ending in '\\n'. Paths are the guest's
(/nix/store/...), wherever the host copy lives (`store_root`).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

STORE_DIR = b"/nix/store"
REGISTRATION_NAME = b"nix-path-registration"


def _file_sha256(path: bytes) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _entry_line(guest_path: bytes, host_path: bytes) -> bytes:
    st = os.lstat(host_path)
    if stat.S_ISLNK(st.st_mode):
        return b"l " + guest_path + b" " + os.readlink(host_path)
    if stat.S_ISDIR(st.st_mode):
        return b"d " + guest_path
    if stat.S_ISREG(st.st_mode):
        x = b"x" if st.st_mode & 0o111 else b"-"
        return b"f " + guest_path + b" " + x + b" " + _file_sha256(host_path).encode()
    raise ValueError(f"not a file, directory or symlink: {host_path!r}")


def _walk(guest_path: bytes, host_path: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(path, line) for an entry and, for a real directory (not a symlink to one), all below it."""
    yield guest_path, _entry_line(guest_path, host_path)
    if stat.S_ISDIR(os.lstat(host_path).st_mode):
        for name in os.listdir(host_path):
            yield from _walk(guest_path + b"/" + name, host_path + b"/" + name)


def store_lines(paths: list[str], registration: bytes, store_root: Path = Path("/")) -> list[bytes]:
    """The sorted entry lines of a guest /nix/store holding `paths` and the registration file."""
    root = os.fsencode(store_root)
    registration_path = STORE_DIR + b"/" + REGISTRATION_NAME
    registration_sha = hashlib.sha256(registration).hexdigest().encode()
    entries = [(registration_path, b"f " + registration_path + b" - " + registration_sha)]
    for path in paths:
        guest = os.fsencode(path)
        if not guest.startswith(STORE_DIR + b"/"):
            raise ValueError(f"not a store path: {path}")
        entries.extend(_walk(guest, os.path.join(root, guest.lstrip(b"/"))))
    # The guest sorts the paths (`find | LC_ALL=C sort`), by bytes, before making lines.
    return [line for _, line in sorted(entries)]


def digest_of_lines(lines: list[bytes]) -> str:
    return hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()


def store_digest(paths: list[str], registration: bytes, store_root: Path = Path("/")) -> str:
    """The digest the guest prints if its /nix/store is exactly `paths` plus the registration."""
    return digest_of_lines(store_lines(paths, registration, store_root))


def explain_mismatch(guest_lines: list[str], host_lines: list[bytes], limit: int = 60) -> str:
    """A unified diff of guest versus host entry lines, for an assertion message."""
    host = [line.decode(errors="replace") for line in host_lines]
    diff = list(difflib.unified_diff(host, guest_lines, "host (expected)", "guest", lineterm="", n=1))
    if len(diff) > limit:
        diff = [*diff[:limit], f"... {len(diff) - limit} more diff lines"]
    return "\n".join(diff) or "(entry lines agree; the digest line itself differs or was garbled)"
