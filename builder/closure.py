"""Store paths and closures: StorePath, Closure, reading closure JSON, validation and graph queries.

The closure-JSON shapes (every `nix path-info --json --recursive` form from Nix 2.3 to 2.35, Lix,
Determinate Nix, and structured-attrs `exportReferencesGraph`) are told apart in
builder/closure_json.py; what an entry's fields mean is decided here, the same for all of them.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.closure_cycles import refuse_cycles
from builder.closure_json import Entry, bounded_int, clip, entries, shown
from builder.errors import NetbuildError
from builder.formats.nixhash import HashFormatError, format_nix32, parse_sha256

STORE_DIR = "/nix/store"
# The registration `nix-store --load-db` loads at boot: a file in the store directory, not a store path.
REGISTRATION_FILE = "nix-path-registration"  # its name: the squashfs image, mounted as the store, holds it at its root
REGISTRATION_PATH = f"{STORE_DIR}/{REGISTRATION_FILE}"  # where the booted system finds it (the initramfs's entry)
# A store path's base name: 32 nix32 characters (no e, o, u, t), '-', then the name.
_BASENAME = re.compile(r"[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+")
# Nix refuses a longer name, so no store path is longer than 11 + 33 + 211 = 255 characters.
_MAX_NAME = 211


def validate_store_path(path: object) -> str:
    """Return the path if it is a well-formed top-level store path, else say why not."""
    if not isinstance(path, str):
        raise NetbuildError(f"store path must be a string, got {type(path).__name__}: {shown(path)}")
    prefix = STORE_DIR + "/"
    if not path.startswith(prefix):
        raise NetbuildError(f"{shown(path)} is not a store path (it must start with {prefix})")
    base = path[len(prefix):]
    name = base[33:]
    if not _BASENAME.fullmatch(base) or name.startswith(".") or len(name) > _MAX_NAME:
        raise NetbuildError(
            f"{shown(path)} is not a valid store path (expected {prefix}<32 nix32 chars>-<name>, "
            f"name of at most {_MAX_NAME} of [A-Za-z0-9+-._?=] not starting with '.')"
        )
    return path


@dataclass(frozen=True, slots=True)
class StorePath:
    path: str
    nar_hash: bytes | None  # sha256 digest; None when the input did not say
    nar_size: int | None
    references: tuple[str, ...]  # sorted, may include the path itself
    deriver: str | None = None

    @property
    def basename(self) -> str:
        return self.path[len(STORE_DIR) + 1:]

    @property
    def name(self) -> str:
        return self.basename.split("-", 1)[1]

    def verified(self, digest: bytes, size: int, rootfs_bytes: int | None = None) -> VerifiedPath:
        """This path with the NAR hash and size read from disk, if they agree with what the closure says."""
        if self.nar_hash is not None and self.nar_hash != digest:
            raise NetbuildError(
                f"{self.path}: NAR hash mismatch: the closure says {format_nix32(self.nar_hash)}, the files on "
                f"disk hash to {format_nix32(digest)} (was the path modified, or is the JSON from another store?)"
            )
        if self.nar_size is not None and self.nar_size != size:
            raise NetbuildError(
                f"{self.path}: NAR size mismatch: the closure says {self.nar_size}, the files on disk give {size}"
            )
        return VerifiedPath(self.path, digest, size, self.references, rootfs_bytes)


@dataclass(frozen=True, slots=True)
class VerifiedPath:
    """A store path whose NAR hash and size are known to match the files on disk."""

    path: str
    nar_hash: bytes
    nar_size: int
    references: tuple[str, ...]
    # What it takes in a tmpfs once unpacked (builder/footprint.py), when the writer counted it.
    rootfs_bytes: int | None = field(default=None, compare=False)

    @property
    def nar_hash_nix32(self) -> str:
        return format_nix32(self.nar_hash)


class Closure:
    """A set of store paths closed under references, keyed and iterated in path order."""

    def __init__(self, paths: Iterable[StorePath], *, source: str) -> None:
        self.source = source
        self._paths: dict[str, StorePath] = {}
        for sp in sorted(paths, key=lambda p: p.path):
            self._paths[sp.path] = sp
        if not self._paths:
            raise NetbuildError(f"{source}: the closure is empty")
        for sp in self._paths.values():
            for ref in sp.references:
                if ref not in self._paths:
                    raise NetbuildError(
                        f"{source}: {sp.path} references {ref}, which is not in the closure "
                        "(pass the whole closure: nix path-info --json --recursive)"
                    )

    def __iter__(self) -> Iterator[StorePath]:
        return iter(self._paths.values())

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, path: object) -> bool:
        return path in self._paths

    def __getitem__(self, path: str) -> StorePath:
        return self._paths[path]

    def roots(self) -> list[str]:
        """Paths that no other path refers to, in path order."""
        referenced = {ref for sp in self for ref in sp.references if ref != sp.path}
        return [p for p in self._paths if p not in referenced]



def load_closure(source: str, data: bytes) -> Closure:
    """Parse closure JSON bytes; `source` names the input in error messages."""
    try:
        doc = json.loads(data, parse_int=bounded_int)
    except NetbuildError as e:  # from bounded_int: a number longer than any Nix writes
        raise NetbuildError(f"{source}: {e}") from None
    except RecursionError:
        raise NetbuildError(f"{source}: JSON nested too deeply to be a closure") from None
    except UnicodeDecodeError as e:
        raise NetbuildError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise NetbuildError(f"{source}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    closure = Closure(_store_paths(source, doc), source=source)
    refuse_cycles(source, {sp.path: sp.references for sp in closure})
    return closure


def _store_paths(source: str, doc: Any) -> list[StorePath]:
    seen: dict[str, StorePath] = {}
    for entry in entries(source, doc, STORE_DIR):
        sp = _store_path(source, entry)
        if sp.path in seen and seen[sp.path] != sp:
            raise NetbuildError(f"{source}: {sp.path} appears twice with different information")
        seen[sp.path] = sp
    return list(seen.values())


def _store_path(source: str, entry: Entry) -> StorePath:
    where, item = entry.where, entry.fields
    if entry.path is None:
        raise NetbuildError(f"{source}: {where}: missing field 'path'")
    try:
        path = validate_store_path(entry.path)
    except NetbuildError as e:
        raise NetbuildError(f"{source}: {where}: {e}") from None
    if item is None:
        raise NetbuildError(
            f"{source}: {path} is not valid in the store it was queried from "
            "(Nix reports it missing: build or fetch it first)"
        )
    nar_hash = None
    if item.get("narHash") is not None:
        if not isinstance(item["narHash"], str):
            raise NetbuildError(f"{source}: {path}: narHash must be a string, got {shown(item['narHash'])}")
        try:
            nar_hash = parse_sha256(item["narHash"])
        except HashFormatError as e:
            raise NetbuildError(f"{source}: {path}: narHash: {clip(str(e))}") from None
    nar_size = item.get("narSize")
    if nar_size is not None and (not isinstance(nar_size, int) or isinstance(nar_size, bool) or nar_size < 0):
        raise NetbuildError(f"{source}: {path}: narSize must be a non-negative integer, got {shown(nar_size)}")
    if nar_size == 0:
        # Old Nix databases hold 0 for "not recorded" (no store path serialises to an empty NAR):
        # unknown, like an absent narSize, so it is computed from the files and the hash checked.
        nar_size = None
    refs = item.get("references")
    if refs is None:
        raise NetbuildError(f"{source}: {path}: missing field 'references'")
    if not isinstance(refs, list):
        raise NetbuildError(f"{source}: {path}: 'references' must be a list of store paths")
    for ref in refs:
        try:
            validate_store_path(ref)
        except NetbuildError as e:
            raise NetbuildError(f"{source}: {path}: references: {e}") from None
    deriver = item.get("deriver") if isinstance(item.get("deriver"), str) else None
    return StorePath(path, nar_hash, nar_size, tuple(sorted(set(refs))), deriver)


def owner(path: str) -> str | None:
    """The top-level store path that holds path (or is path): /nix/store/<hash>-<name> for
    /nix/store/<hash>-<name>/any/file. None for a path outside /nix/store. Whether that store path
    is one of a closure's is the caller's question: `owner(path) in closure`."""
    if not path.startswith(STORE_DIR + "/"):
        return None
    return f"{STORE_DIR}/{path[len(STORE_DIR) + 1 :].split('/', 1)[0]}"


class Unresolved(NetbuildError):
    """A path that leads nowhere (StoreFS.resolve): the message says where the walk stopped."""


def store_read_error(sp: StorePath, e: Exception) -> NetbuildError:
    """e, met reading sp's files from the store (an OSError naming the file, or what the NAR walk
    found wrong), as the one-line error naming sp."""
    if isinstance(e, OSError):
        where = f" {os.fsdecode(e.filename)}" if e.filename is not None else ""
        return NetbuildError(f"{sp.path}: cannot read{where}: {e.strerror}")
    return NetbuildError(f"{sp.path}: {e}")


class StoreFS:
    """Where the closure's files live on this machine: ROOT/nix/store/… (ROOT is '/' normally)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def disk_path(self, store_path: str) -> Path:
        return self.root / store_path.lstrip("/")

    def check_present(self, closure: Closure) -> None:
        if not (self.root / STORE_DIR.lstrip("/")).is_dir():
            raise NetbuildError(f"--store-root {self.root}: there is no {self.root / STORE_DIR.lstrip('/')} directory")
        for sp in closure:
            try:
                os.lstat(self.disk_path(sp.path))
            except FileNotFoundError:
                where = "" if self.root == Path("/") else f" under --store-root {self.root}"
                raise NetbuildError(f"{sp.path} does not exist on disk{where}") from None
            except OSError as e:
                raise NetbuildError(f"{sp.path}: cannot read: {e.strerror}") from None

    def resolve(self, path: str, *, image: Closure | None = None, max_links: int = 40) -> str:
        """Follow symlinks inside the store root; returns the final store-side path (e.g. /nix/store/…/bzImage),
        or, for a link that leaves the store, the outside path it leads to.

        Symlinks in a store point at absolute /nix/store paths, which must be looked up under the
        store root rather than on the host, so os.path.realpath cannot be used.

        With `image`, the store as a machine booted with that closure alone sees it: every path the
        walk passes through must lie in one of its store paths (the host's store may hold more), a
        link out of the store leads nowhere, and a file that cannot be read stops the walk too.
        Every path that leads nowhere raises Unresolved, saying where the walk stopped.
        """
        parts = [p for p in path.split("/") if p]
        resolved: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join([*resolved, part])
            if image is not None and candidate not in ("/nix", STORE_DIR):
                if not candidate.startswith(STORE_DIR + "/"):
                    raise Unresolved(f"{candidate} is outside {STORE_DIR}, where the image has nothing")
                if owner(candidate) not in image:
                    raise Unresolved(f"{owner(candidate)} is not in the closure")
            disk = self.disk_path(candidate)
            try:
                st = os.lstat(disk)
            except FileNotFoundError:
                where = "" if image is not None else f" (while resolving {path})"
                raise Unresolved(f"{candidate} does not exist{where}") from None
            except OSError as e:
                if image is None:
                    raise
                raise Unresolved(f"{candidate}: cannot read: {e.strerror}") from None
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > max_links:
                    raise Unresolved(f"{path}: too many levels of symbolic links")
                target = os.readlink(disk)
                if target.startswith("/"):
                    if image is None and not target.startswith(STORE_DIR + "/"):
                        # It leaves the store: nothing under the root to follow; the caller decides.
                        return os.path.normpath("/".join([target, *parts]))
                    resolved = []
                parts = [p for p in target.split("/") if p] + parts
            else:
                resolved.append(part)
        return "/" + "/".join(resolved)
