"""Which kernel modules the built-in stage 1 loads, and in what order.

A modules tree is a `lib/modules/<release>` directory: the toplevel's `kernel-modules/lib/modules/<release>`
(NixOS) or one given with --modules (e.g. Debian's /lib/modules/<release>). The stage 1 needs `loop`,
`squashfs` and `overlay`; each of them, unless the kernel has it built in (`modules.builtin`), is
loaded after everything its `.modinfo` says it needs:

- `depends=`: hard dependencies, each a module in the tree or built in, else the build is refused;
- `softdep=pre:` / `post:`: loaded before / after the module when they can be found — by module
  name, then through `modules.alias` — and skipped when built in or not found, as modprobe does.
  (A module may declare several softdep= lines; all count here, where kmod reads only the first.)

Every module shipped must have been built for the kernel being booted: the release in its vermagic
must equal the kernel's (the first word of the bzImage's version string), else the kernel would
refuse it at boot with a bare "Invalid module format"; netbuild refuses it at build time instead.

A tree inside the store may be made of symlinks into other store paths (NixOS builds kernel-modules
with buildEnv); they are followed under the store root (--store-root), never on the host.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from builder.closure import STORE_DIR, StoreFS
from builder.errors import NetbuildError
from builder.formats.kmod import (
    COMPRESSED_SUFFIXES,
    KmodError,
    ModuleInfo,
    module_name_from_filename,
    module_suffix,
    normalize_name,
    read_module,
)

# Links to the kernel's build and source trees: large, and never modules.
_SKIPPED_TOP = {"build", "source"}
_MAX_DEPTH = 16  # a module tree is a few levels deep; deeper means a symlink loop


@dataclass(frozen=True)
class KernelModule:
    name: str
    relpath: str  # where it is in the tree, e.g. kernel/fs/squashfs/squashfs.ko.xz
    elf: bytes  # the module itself, decompressed: BusyBox's insmod needs no decompressor then
    info: ModuleInfo

    @property
    def plain_relpath(self) -> str:
        """Its path in the stage 1, below lib/modules/<release>: the tree's path with a plain .ko suffix."""
        suffix = module_suffix(self.relpath)
        if suffix in COMPRESSED_SUFFIXES:
            return self.relpath[: -len(suffix)] + ".ko"
        return self.relpath


class ModulesTree:
    """One lib/modules/<release> directory: its module files by name, what is built in, the aliases."""

    def __init__(self, label: str, path: str, fs: StoreFS) -> None:
        """label names the tree in messages; path is absolute, read through fs (a store root, or '/')."""
        self.label = label
        self._fs = fs
        self._path = path
        root = self._disk(path)
        if not root.is_dir():
            raise NetbuildError(f"{label}: not a directory")
        self.files = self._index(root)
        builtin_text = self._read_optional("modules.builtin")
        self.has_builtin_list = builtin_text is not None
        self.builtin = {module_name_from_filename(os.path.basename(line.strip()))
                        for line in (builtin_text or "").splitlines() if module_suffix(line.strip())}
        self.aliases = self._read_aliases()
        self.builtin_aliases = self._read_builtin_aliases()

    def _disk(self, path: str) -> Path:
        """Where path (absolute, possibly through symlinks) is on this machine."""
        resolved = self._fs.resolve(path)
        if self._fs.root != Path("/") and not resolved.startswith(STORE_DIR + "/"):
            raise NetbuildError(f"{self.label}: {path} leads out of the store, to {resolved}")
        return self._fs.disk_path(resolved)

    def _index(self, root: Path) -> dict[str, str]:
        candidates: dict[str, list[str]] = {}
        pending: list[tuple[str, Path, int]] = [("", root, 0)]
        while pending:
            rel, directory, depth = pending.pop()
            if depth > _MAX_DEPTH:
                raise NetbuildError(f"{self.label}: {rel} is nested too deeply (a symlink loop?)")
            for entry in sorted(os.listdir(directory)):
                if not rel and entry in _SKIPPED_TOP:
                    continue
                child_rel = f"{rel}/{entry}" if rel else entry
                child = directory / entry
                mode = os.lstat(child).st_mode
                if stat.S_ISLNK(mode):
                    try:
                        child = self._disk(f"{self._path}/{child_rel}")
                        mode = os.stat(child).st_mode
                    except (NetbuildError, OSError):
                        continue  # a dangling link is no module, and no directory of modules either
                if stat.S_ISDIR(mode):
                    pending.append((child_rel, child, depth + 1))
                elif stat.S_ISREG(mode) and module_suffix(entry):
                    candidates.setdefault(module_name_from_filename(entry), []).append(child_rel)
        # Two files for one name: depmod's default search order puts updates/ before the rest.
        return {name: min(paths, key=lambda p: (not p.startswith("updates/"), p))
                for name, paths in candidates.items()}

    def _read_optional(self, name: str) -> str | None:
        try:
            return self._disk(f"{self._path}/{name}").read_text(encoding="utf-8", errors="replace")
        except (NetbuildError, FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise NetbuildError(f"{self.label}/{name}: cannot read: {e.strerror}") from None

    def _read_aliases(self) -> list[tuple[str, str]]:
        """modules.alias (depmod's index of every module's alias= fields): (pattern, module name)."""
        pairs = []
        for line in (self._read_optional("modules.alias") or "").splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                pairs.append((normalize_name(words[1]), normalize_name(words[2])))
        return pairs

    def _read_builtin_aliases(self) -> set[str]:
        """Aliases of built-in modules (modules.builtin.modinfo: NUL-separated `module.alias=…`)."""
        try:
            raw = self._disk(f"{self._path}/modules.builtin.modinfo").read_bytes()
        except (NetbuildError, FileNotFoundError, NotADirectoryError):
            return set()
        except OSError as e:
            raise NetbuildError(f"{self.label}/modules.builtin.modinfo: cannot read: {e.strerror}") from None
        found = set()
        for item in raw.split(b"\0"):
            key, eq, value = item.decode("utf-8", "replace").partition("=")
            if eq and key.endswith(".alias"):
                found.add(normalize_name(value))
        return found

    def lookup_soft(self, name: str) -> list[str] | None:
        """Modules a softdep name stands for ([] when built in), or None when nothing matches."""
        name = normalize_name(name)
        if name in self.files:
            return [name]
        # modules.alias before what is built in, as modprobe does: `crc32c` means crc32c_intel when
        # that module exists, although the built-in crc32c_generic answers to the name too.
        matches = sorted({module for pattern, module in self.aliases if fnmatch.fnmatchcase(name, pattern)})
        if matches:
            return [m for m in matches if m not in self.builtin]
        if name in self.builtin or name in self.builtin_aliases:
            return []
        return None

    def load(self, name: str) -> KernelModule:
        relpath = self.files[name]
        where = f"{self.label}/{relpath}"
        try:
            data = self._disk(f"{self._path}/{relpath}").read_bytes()
        except OSError as e:
            raise NetbuildError(f"{where}: cannot read: {e.strerror}") from None
        try:
            elf, info = read_module(data, relpath)
        except KmodError as e:
            raise NetbuildError(f"{where}: {e}") from None
        return KernelModule(name=name, relpath=relpath, elf=elf, info=info)


def resolve_modules(tree: ModulesTree, wanted: tuple[str, ...], kernel_release: str, *,
                    optional: tuple[str, ...] = (), layout: str = "squashfs") -> list[KernelModule]:
    """The modules to load for `wanted`, dependencies first; built-in ones are left out. `optional`
    ones are added when the tree has them (or they are built in) and skipped otherwise
    (unresolved_optional names those)."""
    order: list[KernelModule] = []
    done: set[str] = set()
    visiting: list[str] = []

    def missing(name: str, needed_by: str | None) -> NetbuildError:
        why = f"module {needed_by} depends on {name}" if needed_by else f"the {layout} layout's stage 1 needs {name}"
        listed = ("modules.builtin does not list it" if tree.has_builtin_list
                  else "the tree has no modules.builtin to say it is built in")
        return NetbuildError(f"{tree.label}: {why}, but there is no such module and {listed}")

    def visit(name: str, needed_by: str | None, *, soft: bool) -> None:
        name = normalize_name(name)
        if name in done or name in tree.builtin:
            return
        if name in visiting:
            if soft:
                return  # softdeps may point back at a module on the way; modprobe ignores that too
            cycle = " -> ".join([*visiting[visiting.index(name):], name])
            raise NetbuildError(f"{tree.label}: modules depend on each other in a cycle: {cycle}")
        if name not in tree.files:
            raise missing(name, needed_by)
        module = tree.load(name)
        _check_vermagic(tree, module, kernel_release)
        visiting.append(name)
        # modprobe's order: hard dependencies, then the pre-softdeps, the module, the post-softdeps.
        for dep in module.info.depends:
            visit(dep, name, soft=False)
        for dep in module.info.softdeps.pre:
            for found in tree.lookup_soft(dep) or []:
                visit(found, name, soft=True)
        visiting.pop()
        order.append(module)
        done.add(name)
        for dep in module.info.softdeps.post:
            for found in tree.lookup_soft(dep) or []:
                visit(found, name, soft=True)

    for name in wanted:
        visit(name, None, soft=False)
    for name in optional:
        if normalize_name(name) in tree.files:
            visit(name, None, soft=False)
    return order


def unresolved_optional(tree: ModulesTree, optional: tuple[str, ...]) -> list[str]:
    """The optional modules that are neither in the tree nor built in: what the stage 1 will lack."""
    return [name for name in optional
            if normalize_name(name) not in tree.files and normalize_name(name) not in tree.builtin]


def _check_vermagic(tree: ModulesTree, module: KernelModule, kernel_release: str) -> None:
    built_for = module.info.vermagic_release
    if built_for != kernel_release:
        magic = module.info.vermagic.strip() or "none"
        raise NetbuildError(
            f"{tree.label}/{module.relpath}: module {module.name} was built for kernel {built_for or '(unknown)'} "
            f"(vermagic {magic!r}), but the kernel to boot is {kernel_release}; "
            "use the modules built with that kernel (--modules DIR)"
        )
