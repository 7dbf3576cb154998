"""What an ELF program needs before it can run: its PT_INTERP loader and its DT_NEEDED libraries,
found the way glibc's loader finds them (RPATH/RUNPATH with $ORIGIN, then the default directories).

pyelftools reads the program headers and the dynamic segment (not the section headers, which a
stripped binary may lack). Whether a file exists "in the image" is the caller's business: it
passes a `find` function, so the same search serves any layout.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from builder.arch import X86_64

ELF_MAGIC = b"\x7fELF"
# Where glibc's loader looks last, when neither RPATH nor RUNPATH had the library (and there is no
# /etc/ld.so.cache in a store-only image): per architecture, builder/arch.py; x86-64's by default.
DEFAULT_LIBRARY_DIRS = X86_64.library_dirs


class ElfReadError(ValueError):
    """A file that starts like ELF but cannot be parsed."""


@dataclass(frozen=True)
class ElfInfo:
    machine: str  # pyelftools' name: "EM_X86_64", "EM_386", "EM_AARCH64", …
    interpreter: str | None  # PT_INTERP, None for a static program or a library
    needed: tuple[str, ...]  # DT_NEEDED, in order
    rpath: tuple[str, ...]  # DT_RPATH entries (ignored by the loader when DT_RUNPATH is present)
    runpath: tuple[str, ...]  # DT_RUNPATH entries
    soname: str | None = None  # DT_SONAME: the name a loaded library satisfies DT_NEEDED entries by


def is_elf(head: bytes) -> bool:
    return head.startswith(ELF_MAGIC)


def read_elf(path: Path) -> ElfInfo:
    """The loader-relevant facts of the ELF file at path (the caller has seen the magic)."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            interpreter = None
            needed: list[str] = []
            rpath: list[str] = []
            runpath: list[str] = []
            soname = None
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    interpreter = segment.get_interp_name()
                elif isinstance(segment, DynamicSegment):
                    for tag in segment.iter_tags():
                        # pyelftools sets needed/rpath/runpath/soname on a tag at run time, by its
                        # kind: its type information cannot know them, hence the ignores.
                        kind = tag.entry.d_tag
                        if kind == "DT_NEEDED":
                            needed.append(tag.needed)  # type: ignore[attr-defined]
                        elif kind == "DT_RPATH":
                            rpath.extend(_split_path_list(tag.rpath))  # type: ignore[attr-defined]
                        elif kind == "DT_RUNPATH":
                            runpath.extend(_split_path_list(tag.runpath))  # type: ignore[attr-defined]
                        elif kind == "DT_SONAME":
                            soname = tag.soname  # type: ignore[attr-defined]
            return ElfInfo(
                machine=str(elf["e_machine"]),
                interpreter=interpreter,
                needed=tuple(needed),
                rpath=tuple(rpath),
                runpath=tuple(runpath),
                soname=soname,
            )
    except (ELFError, ValueError, KeyError, IndexError) as e:  # pyelftools raises all of these on bad input
        raise ElfReadError(f"{path}: not a readable ELF file ({e})") from None


def _split_path_list(value: str) -> list[str]:
    # An empty entry means the current directory to glibc; nothing an init can rely on, so skip it.
    return [entry for entry in value.split(":") if entry]


def expand_origin(entry: str, origin: str) -> str | None:
    """$ORIGIN / ${ORIGIN} replaced by the object's directory; None if another token ($LIB,
    $PLATFORM) is left, which depends on the machine and is not searched."""
    expanded = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
    return None if "$" in expanded else posixpath.normpath(expanded)


@dataclass(frozen=True)
class Found:
    """A file present in the image: its path there after symlinks, and where to read it here."""

    path: str
    disk: Path


Find = Callable[[str], Found | None]


@dataclass(frozen=True)
class MissingLibrary:
    needed: str  # the DT_NEEDED name
    needed_by: str  # image path of the object that needs it
    searched: tuple[str, ...]  # the directories looked in, in order


@dataclass(frozen=True)
class _Loaded:
    path: str  # image path it was found under (its $ORIGIN for a library)
    info: ElfInfo


def missing_libraries(
    program: Found, info: ElfInfo, find: Find, *, preloaded: tuple[ElfInfo, ...] = (),
    default_dirs: tuple[str, ...] = DEFAULT_LIBRARY_DIRS,
) -> list[MissingLibrary]:
    """Every DT_NEEDED library of program and of the libraries it pulls in that the loader would not
    find in the image. The program's $ORIGIN is the directory of its resolved path (the kernel
    gives the loader /proc/self/exe); a library's is the directory it was found in. `preloaded`
    are objects already in memory (the PT_INTERP loader): their SONAMEs satisfy DT_NEEDED."""
    missing: list[MissingLibrary] = []
    loaded: set[str] = {program.path}
    # glibc loads a name once, and a loaded object's SONAME satisfies later needs of that name.
    names_done: set[str] = {obj.soname for obj in preloaded if obj.soname}
    # (object, the RPATHs of the objects that loaded it, expanded): breadth first, like the loader.
    queue: list[tuple[_Loaded, tuple[str, ...]]] = [(_Loaded(program.path, info), ())]
    while queue:
        obj, loaders_rpath = queue.pop(0)
        origin = posixpath.dirname(obj.path)
        chain_rpath = _expanded(obj.info.rpath, origin) + loaders_rpath
        # An object with DT_RUNPATH ignores every DT_RPATH, its own and its loaders'.
        directories = (
            *(() if obj.info.runpath else chain_rpath), *_expanded(obj.info.runpath, origin), *default_dirs,
        )
        for name in obj.info.needed:
            if name in names_done:
                continue
            names_done.add(name)
            candidates = [posixpath.normpath("/" + name)] if "/" in name else [
                posixpath.join(d, name) for d in directories
            ]
            hit = next(((c, found) for c in candidates if (found := find(c)) is not None), None)
            try:
                library = None if hit is None else _Loaded(hit[0], read_elf(hit[1].disk))
            except ElfReadError:
                library = None  # the loader would skip it and fail just the same
            if library is None:
                missing.append(MissingLibrary(name, obj.path, () if "/" in name else directories))
            elif library.path not in loaded:
                loaded.add(library.path)
                if library.info.soname:
                    names_done.add(library.info.soname)
                queue.append((library, chain_rpath))
    return missing


def _expanded(entries: tuple[str, ...], origin: str) -> tuple[str, ...]:
    return tuple(e for e in (expand_origin(entry, origin) for entry in entries) if e is not None)
