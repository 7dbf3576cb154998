"""The OUT contract: the files `netbuild CLOSURE -o OUT` leaves in OUT — their names, their modes —
and manifest.json and SHA256SUMS, written and read back. No other module spells an artifact's
name or parses manifest.json.

    bzImage, initrd, kernel-params      the kernel (x86), the initrd, its command line
    Image                               the kernel, on arm64 (nixpkgs' name), instead of bzImage
    pxelinux.cfg/default                PXELINUX's configuration: U-Boot's `pxe` (and PXELINUX) boot from it
    boot.scr.uimg                       the U-Boot script image that runs `pxe get` and `pxe boot`
    devicetree.dtb                      --dtb's device tree (arm64), for U-Boot to hand the kernel
    netboot.ipxe                        the iPXE script; with a menu, also netboot-<entry>.ipxe
    netboot.efi, netboot-uki.ipxe       the unified kernel image (--uki), and iPXE's script chaining it
    run-qemu                            boots OUT in QEMU: the one program (0755)
    store.img                           the vm-disk layout's store: a squashfs image run-qemu attaches
    registration, store-paths,          closureInfo's three files
      total-nar-size
    manifest.json, SHA256SUMS           what was built from what; the sha256 of every file
    menu.ipxe                           `netbuild menu`'s, in a directory beside the OUTs it offers

Every file is 0644 whatever the umask (OUT is served to other machines), run-qemu alone 0755.

manifest.json is read back by `netbuild check`, `netbuild menu`, `netbuild size`, `netbuild boot`
and by a build about to replace OUT, each through `read_manifest`: a `Manifest` whose header is
checked when it is read and each section when it is first asked for, in the shape netbuild writes
it, so that a reader is refused only over the part it uses (an OUT of an older netbuild, whose
manifest lacks a section or has it in an older shape, is still recognised as netbuild's).

An OUT handed to `netbuild check` may be hostile: every file of it is opened through open_regular,
which reads only regular files of OUT itself — never through a symlink (which could point at
/etc/shadow, and its size would show), never a device or a FIFO (which would never end or never
start) — and manifest.json is bounded and checked field by field, each failure one ManifestError.

(Named outcontract rather than out: `out` is what every function calls the OUT directory it gets.)
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Container, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from builder.errors import NetbuildError
from builder.formats import CHUNK
from builder.formats.initrd import Member

if TYPE_CHECKING:  # what the manifest is written from; none of it is needed to read one
    from builder.closure import VerifiedPath
    from builder.plan import BootPlan, FromBootspec, Menu
    from builder.run.memory import BootMemory
    from builder.writers.members import InitrdResult
    from builder.writers.uki import UkiResult

# --- the names ------------------------------------------------------------------------------

BZIMAGE = "bzImage"
IMAGE = "Image"  # an arm64 kernel Image, nixpkgs' name for it
KERNELS = {"x86_64": BZIMAGE, "aarch64": IMAGE}  # builder/arch.py's name → OUT's kernel
PXELINUX_DIR = "pxelinux.cfg"
PXELINUX_CFG = f"{PXELINUX_DIR}/default"  # the one artifact in a directory: where PXELINUX and U-Boot look
DEVICETREE = "devicetree.dtb"  # --dtb's device tree, which pxelinux.cfg/default's FDT line names
BOOT_SCR = "boot.scr.uimg"  # the name U-Boot's distro boot fetches over TFTP (builder/writers/uboot_script.py)
INITRD = "initrd"
KERNEL_PARAMS = "kernel-params"
NETBOOT_IPXE = "netboot.ipxe"
NETBOOT_EFI = "netboot.efi"
NETBOOT_UKI_IPXE = "netboot-uki.ipxe"  # iPXE on UEFI: chain netboot.efi with its command line
RUN_QEMU = "run-qemu"
REGISTRATION = "registration"
STORE_PATHS = "store-paths"
TOTAL_NAR_SIZE = "total-nar-size"
MANIFEST = "manifest.json"
SHA256SUMS = "SHA256SUMS"
MENU_IPXE = "menu.ipxe"
STORE_IMG = "store.img"  # the vm-disk layout's squashfs image of the closure, beside the initrd


def kernel_artifact(arch: str) -> str:
    """OUT's kernel file for an architecture (builder/arch.py's name)."""
    return KERNELS[arch]


def kernel_in(names: Container[str]) -> str | None:
    """The kernel among an OUT's file names (a set, a manifest's artifacts), None if it has none."""
    return next((name for name in KERNELS.values() if name in names), None)


def entry_script(name: str) -> str:
    """The script of one entry of netboot.ipxe's menu, beside it."""
    return f"netboot-{name}.ipxe"


# --- the artifact table ---------------------------------------------------------------------

ARTIFACT_MODE = 0o644  # independent of the umask: OUT is served to other machines
PROGRAM_MODE = 0o755
# Name → mode, for the files of a fixed name; netboot-<entry>.ipxe are ARTIFACT_MODE too.
MODES: Mapping[str, int] = {
    BZIMAGE: ARTIFACT_MODE, IMAGE: ARTIFACT_MODE, PXELINUX_CFG: ARTIFACT_MODE, BOOT_SCR: ARTIFACT_MODE,
    DEVICETREE: ARTIFACT_MODE,
    INITRD: ARTIFACT_MODE, KERNEL_PARAMS: ARTIFACT_MODE, NETBOOT_IPXE: ARTIFACT_MODE,
    NETBOOT_EFI: ARTIFACT_MODE, NETBOOT_UKI_IPXE: ARTIFACT_MODE, RUN_QEMU: PROGRAM_MODE,
    REGISTRATION: ARTIFACT_MODE, STORE_PATHS: ARTIFACT_MODE,
    TOTAL_NAR_SIZE: ARTIFACT_MODE, MANIFEST: ARTIFACT_MODE, SHA256SUMS: ARTIFACT_MODE, MENU_IPXE: ARTIFACT_MODE,
    STORE_IMG: ARTIFACT_MODE,
}
DIRECTORY_MODE = 0o755  # OUT's one directory, pxelinux.cfg
NESTED = frozenset({PXELINUX_CFG})  # the artifacts in a directory of OUT: their names have one '/'
# The files that are text without a suffix saying so (what `netbuild serve` answers as text/plain).
TEXT_FILES = frozenset({KERNEL_PARAMS, REGISTRATION, STORE_PATHS, TOTAL_NAR_SIZE, SHA256SUMS})


def mode_of(name: str) -> int:
    return MODES.get(name, ARTIFACT_MODE)


# --- writing manifest.json and SHA256SUMS ---------------------------------------------------
#
# Nothing machine-specific goes in: no input file names or directories, no times, no job count —
# two builds of the same closure with the same settings must produce the same manifest.

FORMAT_VERSION = 1
Digest = tuple[int, str]  # a file's (size, sha256 hex)


MANIFEST_LIMIT = 128 << 20  # a 3,000-path NixOS closure writes ~3 MB, 100,000 paths ~100 MB; parsing more
#   could cost gigabytes of memory (a list of 64 M small numbers is 512 MB of pointers)


class NotRegular(NetbuildError):
    """A file of OUT that is a symlink, a device, a FIFO, a directory: not read."""


def open_regular(path: Path, *, follow: bool = False) -> BinaryIO:
    """Open a regular file, refusing (NotRegular) anything else without reading or following it.

    O_NOFOLLOW: a symlink is refused, not followed, so a link out of OUT reveals nothing; O_NONBLOCK:
    opening a FIFO does not wait for a writer; fstat on the descriptor opened (not a second lookup
    by name) decides. OSError (a missing file) is the caller's to word. follow=True follows a
    symlink (a file the user named, not one of OUT's: /boot/initrd.img is one)."""
    nofollow = 0 if follow else os.O_NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | nofollow | os.O_NONBLOCK | os.O_CLOEXEC)
    except ValueError:  # an embedded NUL
        raise NotRegular(f"{os.fsdecode(path)!r}: not a file name") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegular(f"{path}: not a regular file (a symlink); only OUT's own files are read") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            only = "" if follow else "; only OUT's own files are read"
            raise NotRegular(f"{path}: not a regular file ({_kind(mode)}){only}")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    kinds = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
             stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}
    return kinds.get(stat.S_IFMT(mode), "not a file")


def read_regular(path: Path, limit: int) -> bytes:
    """The whole of a small regular file (open_regular), refused past limit bytes."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NetbuildError(f"{path}: larger than {limit} bytes; not one of netbuild's")
    return data


def file_digest(path: Path) -> Digest:
    h = hashlib.sha256()
    size = 0
    with open_regular(path) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def manifest(
    *,
    version: str,
    sections: Mapping[str, Any],
    closure: list[VerifiedPath],
    artifacts: Mapping[str, Digest],
    warnings: list[str],
) -> bytes:
    """`sections` (inputs, recipe, settings, …) go between the header and the artifacts, in order."""
    doc: dict[str, Any] = {"netbuild": {"version": version, "manifest": FORMAT_VERSION}}
    doc.update(sections)
    doc["warnings"] = list(warnings)  # preflight's, so that a served image carries its doubts with it
    doc["artifacts"] = {name: {"size": size, "sha256": digest} for name, (size, digest) in sorted(artifacts.items())}
    doc["closure"] = {
        "paths": len(closure),
        "narSize": sum(p.nar_size for p in closure),
        "storePaths": [
            {"path": p.path, "narHash": p.nar_hash_nix32, "narSize": p.nar_size, "references": list(p.references)}
            for p in sorted(closure, key=lambda p: p.path)
        ],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def sections(plan: BootPlan, initrd: InitrdResult, memory: BootMemory, uki: UkiResult | None, *,
             kernel_sha256: str) -> dict[str, object]:
    """What was built from what. Nothing machine-specific: no file names, directories or times."""
    kernel = plan.kernel
    inputs: dict[str, object] = {
        "toplevel": plan.toplevel,
        "kernel": {
            "origin": kernel.origin,
            "version": kernel.header.version,
            **kernel.header.manifest_fields(),
            "sha256": kernel_sha256,
        },
        "init": plan.init,
        "closureRegistrationSha256": hashlib.sha256(initrd.registration).hexdigest(),
    }
    settings: dict[str, object] = {
        "compress": str(plan.compression),
        "cmdline": plan.cmdline,
        "baseUrl": plan.base_url,
    }
    if plan.dtb is not None:  # only with --dtb: other manifests stay as they were
        settings["dtb"] = {"name": plan.dtb.name, "origin": plan.dtb.origin}
    # Only with a boot.json, so that an OUT built from the toplevel's symlinks is as it always was.
    if plan.bootspec is not None:
        inputs["bootspec"] = _bootspec(plan.bootspec)
    if plan.menu is not None:
        settings["menu"] = _menu(plan.menu)
    result: dict[str, object] = {
        "inputs": inputs,
        "recipe": plan.recipe.settings(),
        "settings": settings,
        "initrd": {
            "layout": plan.recipe.layout,
            "members": [m.to_json() for m in initrd.members],
        },
        "memory": memory.to_json(),  # what a machine needs to boot the image: builder/run/memory.py
    }
    if uki is not None and plan.uki is not None:  # only with --uki: other manifests stay as they were
        signing = plan.uki.signing
        result["uki"] = {
            "stub": uki.stub.origin,
            "signedBy": signing.subject if signing is not None else None,
            "sections": [{"name": s.name, "offset": s.offset, "size": s.size, "virtualAddress": s.virtual_address}
                         for s in uki.sections],
        }
    return result


def _bootspec(used: FromBootspec) -> dict[str, object]:
    """Where each choice came from: the field of boot.json (a jq path), or the option that won."""
    return {
        "file": used.file,
        "specialisation": used.specialisation,
        "kernel": used.kernel,
        "init": used.init,
        "kernelParams": used.kernel_params,
        "initrd": used.initrd,
    }


def _menu(menu: Menu) -> dict[str, object]:
    return {
        "timeoutSeconds": menu.timeout_s,
        "entries": [
            {"name": e.name, "script": entry_script(e.name), "toplevel": e.toplevel, "init": e.init,
             "cmdline": e.cmdline}
            for e in menu.entries
        ],
    }


def sha256sums(artifacts: Mapping[str, Digest]) -> bytes:
    return "".join(f"{digest}  {name}\n" for name, (_, digest) in sorted(artifacts.items())).encode()


# --- reading them back ----------------------------------------------------------------------


class ManifestError(NetbuildError):
    """manifest.json missing, unreadable or not netbuild's, or a section of it not in the shape
    netbuild writes. `reason` is the message without the file's name in front."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


def _failed(path: Path, reason: str) -> ManifestError:
    return ManifestError(f"{path}: {reason}", reason)


class Manifest:
    """An OUT's manifest.json, read: each property is one part of it, checked when first asked for."""

    def __init__(self, file: Path, doc: dict[str, Any]) -> None:
        self.file = file
        self._doc = doc

    def _section(self, name: str) -> dict[str, Any]:
        value = self._doc.get(name)
        if not isinstance(value, dict):
            raise ManifestError(f"{MANIFEST}: field {name!r} is missing or not a dict")
        return value

    @cached_property
    def artifacts(self) -> dict[str, Digest]:
        """Every file of OUT but manifest.json: its (size, sha256)."""
        found: dict[str, Digest] = {}
        for name, entry in self._section("artifacts").items():
            size = entry.get("size") if isinstance(entry, dict) else None
            digest = entry.get("sha256") if isinstance(entry, dict) else None
            if not isinstance(size, int) or isinstance(size, bool) or not isinstance(digest, str):
                raise _failed(self.file, f"artifacts.{name} is not {{\"size\": bytes, \"sha256\": hex}}")
            found[name] = (size, digest)
        return found

    @cached_property
    def layout(self) -> str | None:
        """initrd.layout: the recipe's layout ("initramfs", "squashfs", "vm-9p", "vm-disk")."""
        layout = self._section("initrd").get("layout")
        if layout is not None and not isinstance(layout, str):
            raise _failed(self.file, "initrd.layout is not a string")
        return layout

    @cached_property
    def members(self) -> list[Member]:
        """initrd.members: the initrd's members in file order."""
        initrd = self._section("initrd")
        try:
            members = initrd["members"]
            if not isinstance(members, list):
                raise TypeError("not a list")
            return [Member.from_json(m) for m in members]
        except (KeyError, TypeError, ValueError) as e:
            raise _failed(self.file, f"initrd.members is malformed ({e})") from None

    @cached_property
    def store_paths(self) -> list[tuple[str, int]]:
        """closure.storePaths: (store path, NAR size) of every path of the closure, in path order."""
        closure = self._section("closure")
        try:
            found = [(p["path"], p["narSize"]) for p in closure["storePaths"]]
        except (KeyError, TypeError) as e:
            raise _failed(self.file, f"closure.storePaths is malformed ({e})") from None
        if not all(isinstance(path, str) and isinstance(size, int) for path, size in found):
            raise _failed(self.file, "closure.storePaths is malformed (a path that is not a string, or a narSize "
                                     "that is not a number)")
        return found

    @cached_property
    def toplevel(self) -> str | None:
        """inputs.toplevel: the system booted, or None (a closure booted with --kernel and --init)."""
        return self._string("inputs", "toplevel", optional=True)

    @cached_property
    def init(self) -> str:
        """inputs.init."""
        found = self._string("inputs", "init")
        assert found is not None
        return found

    @cached_property
    def recipe(self) -> str:
        """recipe.name."""
        found = self._string("recipe", "name")
        assert found is not None
        return found

    @cached_property
    def boot_mib(self) -> int:
        """memory.bootMiB: the RAM the image needs to boot (builder/run/memory.py)."""
        value = self._section("memory").get("bootMiB")
        if not isinstance(value, int) or isinstance(value, bool):
            raise _failed(self.file, "memory.bootMiB is missing or not a number")
        return value

    def _string(self, section: str, key: str, *, optional: bool = False) -> str | None:
        fields = self._section(section)
        value = fields.get(key)
        if key not in fields or not (isinstance(value, str) or (optional and value is None)):
            raise _failed(self.file, f"{section}.{key} is missing or not a string")
        return value


def read_manifest(out: Path) -> Manifest:
    """OUT's manifest.json, if it is netbuild's (its header says so); ManifestError otherwise."""
    path = out / MANIFEST
    try:
        data = read_regular(path, MANIFEST_LIMIT)
    except NotRegular as e:  # a manifest that is not a file: not netbuild's (check_replaceable says so)
        raise ManifestError(str(e), str(e)) from None
    except FileNotFoundError:
        raise _failed(path, f"no such file (is {out} a netbuild output directory?)") from None
    except OSError as e:
        raise _failed(path, f"cannot read: {e.strerror}") from None
    return parse_manifest(data, path)


def parse_manifest(data: bytes, path: Path) -> Manifest:
    """A manifest.json's bytes, read from `path` (an OUT's file, or one a disc carries)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:  # ValueError: also an integer of over 4300 digits
        raise _failed(path, f"not valid JSON ({e})") from None
    except RecursionError:
        raise _failed(path, "not valid JSON (nested too deeply)") from None
    if not isinstance(doc, dict) or "netbuild" not in doc:
        raise _failed(path, "not a netbuild manifest")
    return Manifest(path, doc)


def read_sums(out: Path) -> dict[str, str]:
    """OUT's SHA256SUMS: file name → sha256, as `sha256sum -c` reads it."""
    path = out / SHA256SUMS
    try:
        lines = read_regular(path, MANIFEST_LIMIT).decode("utf-8").splitlines()
    except FileNotFoundError:
        raise NetbuildError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NetbuildError(f"{path}: cannot read ({e})") from None
    listed: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or ("/" in name and name not in NESTED):
            raise NetbuildError(f"{path}: line {number} is not '<sha256>  <name>': {line!r}")
        listed[name] = digest
    return listed
