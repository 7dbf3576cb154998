"""What `netbuild iso` puts on a disc, decided before anything is written — from an OUT (its kernel,
initrd and command line), or for a chain ISO (iPXE and a script that boots a URL) — and the check
that a disc holds an OUT (`netbuild check`).

The chain ISO on each Debian release: iPXE's BIOS build (ipxe.lkrn) runs the initrd ISOLINUX hands
it as a script, in every version. iPXE for UEFI is a prebuilt program with no script of its own,
and only since 1.21 (2021) does it run autoexec.ipxe from the file system it was started from —
Debian 13's does; Debian 12's (2019) does not, and takes no script from its command line either
(iPXE reads its UEFI load options only since 2023). There the disc is BIOS-only, with a warning.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from builder.closure import Closure, StoreFS, StorePath
from builder.errors import NetbuildError
from builder.firmware import IPXE_EFI_CANDIDATES, IPXE_LKRN_CANDIDATES, first_present
from builder.formats.bzimage import BzImageError, read_header_file
from builder.formats.iso import SECTOR, IsoListing, file_sha256, read_iso
from builder.outcontract import (
    BZIMAGE,
    INITRD,
    KERNEL_PARAMS,
    MANIFEST,
    NETBOOT_EFI,
    Digest,
    Manifest,
    kernel_in,
    read_manifest,
)
from builder.writers.fatimage import FatFile, copy_fat_file, fat_file_sha256
from builder.writers.ipxe import render
from builder.writers.iso import (
    EFI_IMAGE,
    EFI_LOADER,
    ISOLINUX_BIN,
    ISOLINUX_CFG,
    Disc,
    DiscFile,
    UkiToMake,
    disc_file,
    find_isolinux,
    isolinux_cfg,
    volume_id,
)
from builder.writers.uki import check_uki, find_stub, os_release

AUTOEXEC = "autoexec.ipxe"
CHAIN_SCRIPT = "/chain.ipxe"
CHAIN_VOLUME = "NETBUILD_CHAIN"
_URL_SCHEMES = ("http", "https", "tftp")

Warn = Callable[[str], None]


@dataclass(frozen=True)
class _Out:
    """The parts of an OUT a disc is made of, read and checked against its manifest."""

    out: Path
    manifest: Manifest
    artifacts: dict[str, Digest]
    cmdline: str
    name: str  # the system's name: the toplevel's without its hash
    files: tuple[DiscFile, ...]


def _read_out(out: Path) -> _Out:
    if not out.is_dir():
        raise NetbuildError(f"{out}: not a directory (expected a netbuild OUT directory)")
    manifest = read_manifest(out)
    artifacts = manifest.artifacts
    if kernel_in(artifacts) not in (None, BZIMAGE):
        raise NetbuildError(f"{out}: an {kernel_in(artifacts)} kernel's OUT (arm64); netbuild iso makes x86-64 discs "
                            "only (ISOLINUX, BOOTX64.EFI)")
    for name in (BZIMAGE, INITRD, KERNEL_PARAMS):
        if name not in artifacts or not (out / name).is_file():
            raise NetbuildError(f"{out / name}: missing; a disc boots {out}'s bzImage, initrd and kernel-params")
    params = (out / "kernel-params").read_bytes()
    if disc_file("kernel-params", params).sha256 != artifacts[KERNEL_PARAMS][1]:
        raise NetbuildError(f"{out / 'kernel-params'}: differs from manifest.json (run `netbuild check {out}`)")
    cmdline = params.decode().strip()
    toplevel, init = manifest.toplevel, manifest.init or "netbuild"
    name = toplevel.rsplit("/", 1)[-1][33:] if toplevel else init.rsplit("/", 1)[-1]
    files = (
        disc_file("/bzImage", out / BZIMAGE, artifacts[BZIMAGE][1]),
        disc_file("/initrd", out / INITRD, artifacts[INITRD][1]),
        disc_file("/manifest.json", out / "manifest.json"),  # what the disc was made from travels with it
        disc_file(ISOLINUX_CFG, isolinux_cfg(description=f"netbuild iso: boots {name}", kernel="/bzImage",
                                             initrd="/initrd", append=cmdline)),
    )
    return _Out(out, manifest, artifacts, cmdline, name, files)


def _closure(out: _Out) -> Closure:
    """The closure manifest.json records, enough to find the systemd-stub in it."""
    # Only which paths are in it matters here (where a systemd-stub is), not their references.
    paths = [StorePath(path, None, None, ()) for path, _ in out.manifest.store_paths]
    return Closure(paths, source=str(out.out / MANIFEST))


def disc_for_out(out: Path, *, efi_stub: Path | None = None, label: str | None = None) -> Disc:
    """A disc booting OUT: ISOLINUX for BIOS; for UEFI, OUT's netboot.efi when it has one, else a
    unified kernel image made now (systemd-stub from the closure, --efi-stub or the host)."""
    parts = _read_out(out)
    toplevel = parts.manifest.toplevel
    efi: tuple[FatFile, ...]
    if NETBOOT_EFI in parts.artifacts:
        if efi_stub is not None:
            raise NetbuildError(f"--efi-stub: {out} has {NETBOOT_EFI}, which the disc boots as it is")
        efi = (FatFile(EFI_LOADER, out / NETBOOT_EFI),)
        uki, how = None, f"UEFI: {out}'s {NETBOOT_EFI} as {EFI_LOADER}"
    else:
        stub = find_stub(_closure(parts), StoreFS(Path("/")), efi_stub)
        try:
            uname = read_header_file(out / "bzImage").release
        except BzImageError as e:
            raise NetbuildError(str(e)) from None
        uki = UkiToMake(stub, out / "bzImage", out / "initrd", parts.cmdline, os_release(toplevel, parts.name), uname)
        efi, how = (), f"UEFI: a unified kernel image made with systemd-stub from {stub.origin}"
    return Disc(volume_id(label or parts.name), find_isolinux(), parts.files, efi, uki,
                notes=("BIOS: ISOLINUX, then bzImage and initrd with kernel-params", how))


def reads_autoexec(ipxe_efi: Path) -> bool:
    """Whether this iPXE for UEFI runs autoexec.ipxe from its file system (iPXE ≥ 1.21, 2021): the
    feature's only trace in the binary is the name it looks for."""
    return AUTOEXEC.encode() in ipxe_efi.read_bytes()


def disc_for_chain(url: str, *, ipxe_lkrn: Path | None, ipxe_efi: Path | None, label: str | None,
                   warn: Warn) -> Disc:
    """A small disc that starts iPXE and boots the iPXE script at URL."""
    parsed = urlsplit(url)
    if parsed.scheme not in _URL_SCHEMES or not parsed.netloc or any(c.isspace() for c in url):
        raise NetbuildError(f"--chain {url!r}: expected an http://, https:// or tftp:// URL of an iPXE script, "
                            "e.g. http://10.0.0.1:8080/netboot.ipxe")
    lkrn = ipxe_lkrn or first_present(IPXE_LKRN_CANDIDATES)
    if lkrn is None:
        raise NetbuildError(f"iPXE not found (looked for {IPXE_LKRN_CANDIDATES[0]} and others): the chain ISO starts "
                            "it; install iPXE (Debian: ipxe) or pass --ipxe-lkrn FILE")
    script = render("chain-iso.ipxe", {"url": url, "description": f"netbuild iso --chain {url}"})
    files = (
        disc_file("/ipxe.lkrn", lkrn),
        disc_file(CHAIN_SCRIPT, script),
        disc_file(ISOLINUX_CFG, isolinux_cfg(description=f"netbuild iso --chain {url}: iPXE boots it",
                                             kernel="/ipxe.lkrn", initrd=CHAIN_SCRIPT, append="")),
    )
    efi_program = ipxe_efi or first_present(IPXE_EFI_CANDIDATES)
    efi: tuple[FatFile, ...] | None = None
    if efi_program is not None and reads_autoexec(efi_program):
        # Beside the program: the first place iPXE looks (the file system's root is the second).
        efi = (FatFile(EFI_LOADER, efi_program), FatFile(f"{EFI_LOADER.rsplit('/', 1)[0]}/{AUTOEXEC}", script))
        uefi = f"UEFI: {efi_program} as {EFI_LOADER}, which runs the {AUTOEXEC} beside it"
    elif ipxe_efi is not None:
        raise NetbuildError(f"--ipxe-efi {ipxe_efi}: this iPXE does not run {AUTOEXEC} (iPXE 1.21 or later does), "
                            "so it could not be told which URL to boot")
    else:
        why = (f"{efi_program} is an iPXE older than 1.21 (Debian 12's is from 2019), which runs no script from a disc"
               if efi_program is not None else f"no iPXE for UEFI ({IPXE_EFI_CANDIDATES[0]})")
        warn(f"the chain ISO boots BIOS machines only: {why}; pass --ipxe-efi FILE (iPXE 1.21 or later, e.g. "
             "Debian 13's ipxe.efi) for UEFI")
        uefi = "UEFI: none"
    return Disc(volume_id(label or CHAIN_VOLUME), find_isolinux(), files, efi,
                notes=(f"BIOS: ISOLINUX, then {lkrn} with {CHAIN_SCRIPT}", uefi))


# --- `netbuild check`: a disc made from an OUT -----------------------------------------------------


def check_disc_of_out(iso: Path, out: Path) -> IsoListing:
    """The disc boots OUT: its BIOS entry is ISOLINUX configured for OUT's kernel, initrd and
    command line, which it holds byte for byte; its UEFI entry's FAT image holds a unified kernel
    image of the same kernel, initrd and command line (OUT's netboot.efi itself, if it has one)."""
    parts = _read_out(out)
    listing = read_iso(iso)
    boot = {b.platform: b for b in listing.boot if b.bootable}
    if "BIOS" not in boot or boot["BIOS"].file != ISOLINUX_BIN:
        raise NetbuildError(f"{iso}: no BIOS boot entry for {ISOLINUX_BIN} (not a disc netbuild made from an OUT)")
    for expected in parts.files:
        found = listing.file(expected.path)
        if found is None or found.size != expected.size or file_sha256(iso, found) != expected.sha256:
            raise NetbuildError(f"{iso}: {expected.path} is not {out}'s" if found else f"{iso}: no {expected.path}")
    efi = boot.get("UEFI")
    if efi is None or efi.file != EFI_IMAGE:
        raise NetbuildError(f"{iso}: no UEFI boot entry for {EFI_IMAGE}")
    offset = efi.lba * SECTOR
    own_uki = parts.artifacts.get(NETBOOT_EFI)
    if own_uki is not None and fat_file_sha256(iso, offset, EFI_LOADER) != own_uki[1]:
        raise NetbuildError(f"{iso}: {EFI_IMAGE}'s {EFI_LOADER} is not {out}'s {NETBOOT_EFI}")
    with tempfile.TemporaryDirectory(prefix="netbuild-check-") as tmp:
        loader = Path(tmp) / "BOOTX64.EFI"
        copy_fat_file(iso, offset, EFI_LOADER, loader)
        check_uki(loader, [(".cmdline", parts.cmdline.encode()), (".initrd", out / "initrd"),
                           (".linux", out / "bzImage")])
    return listing
