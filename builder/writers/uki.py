"""OUT/netboot.efi: a unified kernel image (UAPI.5) of the image — systemd-stub with the kernel,
the initrd, the command line, os-release and the kernel's release as PE sections — which UEFI
firmware boots by itself, over HTTP Boot or from a disk, with no iPXE.

The sections are laid out by builder.formats.pe and written here streamed, so an initrd of any
size costs no memory; the result is read back and compared section by section before OUT is
replaced. Signing (Secure Boot) is builder.writers.signing's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from builder.arch import X86_64, Arch
from builder.closure import Closure, StoreFS
from builder.errors import NetbuildError
from builder.filecopy import read_range, sha256_of
from builder.formats import CHUNK
from builder.formats.pe import NewSection, PEError, PlacedSection, add_sections, read_sections, size_of_image
from builder.outcontract import NETBOOT_EFI
from builder.writers.signing import Signing, check_signing

# systemd-stub inside a systemd store path, and as Debian's systemd-boot-efi installs it; the file
# is the architecture's (builder/arch.py: linuxx64.efi.stub, linuxaa64.efi.stub).
STUB_DIR_IN_SYSTEMD = "lib/systemd/boot/efi"
HOST_STUB_DIR = Path("/usr/lib/systemd/boot/efi")
STUB_IN_SYSTEMD = f"{STUB_DIR_IN_SYSTEMD}/{X86_64.efi_stub}"
HOST_STUB = HOST_STUB_DIR / X86_64.efi_stub


@dataclass(frozen=True)
class Stub:
    file: Path  # where to read it on this machine
    origin: str  # the store path it came from, "--efi-stub", or "host (systemd-boot-efi)"


def find_stub(closure: Closure, store: StoreFS, efi_stub: Path | None, arch: Arch = X86_64) -> Stub:
    """The closure's systemd-stub for arch when it has one, else --efi-stub, else the host's; a stub
    for another machine than the kernel's is refused (the firmware would not start it)."""
    in_systemd = f"{STUB_DIR_IN_SYSTEMD}/{arch.efi_stub}"
    host = HOST_STUB_DIR / arch.efi_stub
    stub: Stub | None = None
    for sp in closure:
        candidate = store.disk_path(sp.path) / in_systemd
        if candidate.is_file():
            stub = Stub(candidate, f"{sp.path}/{in_systemd}")
            break
    else:
        if efi_stub is not None:
            if not efi_stub.is_file():
                raise NetbuildError(f"--efi-stub {efi_stub}: no such file")
            stub = Stub(efi_stub, "--efi-stub")
        elif host.is_file():
            stub = Stub(host, f"host {host} (systemd-boot-efi)")
    if stub is None:
        package = "systemd-boot-efi" + ("" if arch is X86_64 else f":{arch.name.replace('aarch64', 'arm64')}")
        raise NetbuildError(f"--uki needs systemd-stub: the closure has no systemd with {in_systemd}; pass "
                            f"--efi-stub FILE or install {package} (Debian)")
    try:
        with open(stub.file, "rb") as f:
            machine, _ = read_sections(f.read(1 << 16), what=f"systemd-stub {stub.origin}")
    except OSError as e:
        raise NetbuildError(f"systemd-stub {stub.origin}: cannot read: {e.strerror}") from None
    except PEError as e:
        raise NetbuildError(str(e)) from None
    if machine != arch.pe_machine:
        raise NetbuildError(f"systemd-stub {stub.origin} is a UEFI program for {machine}, but the kernel is "
                            f"{arch.name}'s; pass --efi-stub with {arch.efi_stub}")
    return stub


def os_release(toplevel: str | None, label: str) -> bytes:
    """The .osrel section: what a boot menu shows for the image."""
    return (f'NAME="netbuild image"\nID=netbuild\nPRETTY_NAME="{label}"\n'
            + (f'IMAGE_ID="{toplevel.rsplit("/", 1)[-1]}"\n' if toplevel else "")).encode()


@dataclass(frozen=True)
class UkiChoice:
    """What netboot.efi is made of, decided before anything is written."""

    stub: Stub
    signing: Signing | None


def plan_uki(closure: Closure, store: StoreFS, wanted: bool, efi_stub: Path | None,
             sign: tuple[Path | None, Path | None, str | None], arch: Arch = X86_64) -> UkiChoice | None:
    key, cert, passphrase_env = sign
    if not wanted:
        for given, option in ((efi_stub, "--efi-stub"), (key, "--sign-key"), (cert, "--sign-cert")):
            if given is not None:
                raise NetbuildError(f"{option} is for netboot.efi: add --uki")
        return None
    if (key is None) != (cert is None):
        raise NetbuildError("signing needs both --sign-key and --sign-cert")
    if passphrase_env is not None and key is None:
        raise NetbuildError("--sign-passphrase-env is for --sign-key")
    signing = check_signing(key, cert, passphrase_env) if key is not None and cert is not None else None
    return UkiChoice(stub=find_stub(closure, store, efi_stub, arch), signing=signing)


@dataclass(frozen=True)
class UkiResult:
    sections: list[PlacedSection]
    stub: Stub


def _sources(kernel: Path, initrd: Path, cmdline: str, osrel: bytes, uname: str) -> list[tuple[str, bytes | Path]]:
    return [(".osrel", osrel), (".cmdline", cmdline.encode()), (".uname", uname.encode()),
            (".initrd", initrd), (".linux", kernel)]


def _size(source: bytes | Path) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def write_uki(dest: Path, *, stub: Stub, kernel: Path, initrd: Path, cmdline: str, osrel: bytes,
              uname: str) -> UkiResult:
    """Write dest: the stub, then the sections' data, then check it reads back as written."""
    sources = _sources(kernel, initrd, cmdline, osrel, uname)
    try:
        stub_bytes = stub.file.read_bytes()
        with open(kernel, "rb") as f:
            kernel_mapped = size_of_image(f.read(1 << 16), what=str(kernel))
        news = [NewSection(name, _size(source), virtual_size=kernel_mapped if name == ".linux" else 0,
                           code=name == ".linux") for name, source in sources]
        headers, placed = add_sections(stub_bytes, news, what=f"systemd-stub {stub.origin}")
    except PEError as e:
        raise NetbuildError(str(e)) from None
    with open(dest, "wb") as out:
        out.write(headers)
        for section, (_, source) in zip(placed, sources, strict=True):
            out.write(b"\0" * (section.offset - out.tell()))
            if isinstance(source, bytes):
                out.write(source)
            else:
                with open(source, "rb") as f:
                    shutil.copyfileobj(f, out, CHUNK)
            out.write(b"\0" * (section.raw_size - section.size))
    check_uki(dest, sources, placed)
    return UkiResult(sections=placed, stub=stub)




def section_digest(path: Path, offset: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        try:
            for chunk in read_range(f, size):
                h.update(chunk)
        except EOFError:
            raise NetbuildError(f"{path}: ends inside a section") from None
    return h.hexdigest()


def check_uki(path: Path, sources: list[tuple[str, bytes | Path]],
              placed: Iterable[PlacedSection] | None = None) -> None:
    """Read an image back: its headers list each named section, holding its source's bytes (and,
    right after writing, where it was placed). `netbuild check` runs it on an OUT too."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    try:
        _, sections = read_sections(head, what=str(path))
    except PEError as e:
        raise NetbuildError(f"self-check: {e}") from None
    by_name = {s.name: s for s in sections}
    expected = {p.name: p for p in placed} if placed is not None else {}
    for name, source in sources:
        found = by_name.get(name)
        if found is None:
            raise NetbuildError(f"self-check: {path.name}: no {name} section")
        where = expected.get(name)
        if where is not None and (found.offset, found.virtual_address) != (where.offset, where.virtual_address):
            raise NetbuildError(f"self-check: {path.name}: section {name} is not where it was written")
        if section_digest(path, found.offset, _size(source)) != sha256_of(source):
            raise NetbuildError(f"self-check: {path.name}: section {name} differs from {_what(source)}")
    if placed is not None and os.stat(path).st_size != max(s.offset + s.raw_size for s in placed):
        raise NetbuildError(f"self-check: {path.name}: bytes after the last section")


def _what(source: bytes | Path) -> str:
    return source.name if isinstance(source, Path) else "what was built"


def check_uki_in(out: Path, kernel: Path, initrd: Path, cmdline: str) -> None:
    """An OUT's netboot.efi holds OUT's kernel, initrd and command line (netbuild check)."""
    check_uki(out / NETBOOT_EFI, [(".cmdline", cmdline.encode()), (".initrd", initrd), (".linux", kernel)])
