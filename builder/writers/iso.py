"""`netbuild iso`: an ISO 9660 image that boots an OUT (or chains to an iPXE script) from a CD, a USB
stick or a BMC's virtual media, under BIOS and UEFI alike.

The disc, written with pycdlib:

- BIOS: an El Torito no-emulation entry booting Debian's ISOLINUX, which reads ISO 9660 itself and
  loads Linux with an initrd, configured by isolinux/isolinux.cfg (OUT's kernel, initrd and
  kernel-params). GRUB would do too, but only from a core image generated for the disc
  (grub-mkrescue's job); ISOLINUX is two prebuilt files.
- UEFI: an El Torito EFI entry whose image, efiboot.img, is a FAT file system (an EFI System
  Partition) with EFI/BOOT/BOOTX64.EFI — a unified kernel image of OUT: OUT's own netboot.efi
  (signed, if it was), or one made here with builder.writers.uki. The firmware starts it with no
  boot loader in between.
- Hybrid: Debian's isohdpfx.bin as the MBR boot code (it starts ISOLINUX from a disk), an MBR
  partition of type 0xEF and a GPT entry for efiboot.img (the ESP a UEFI machine finds on a disk),
  laid out by pycdlib's add_isohybrid, so the same file written to a USB stick boots both ways.

The kernel and initrd are on the disc twice, as files for ISOLINUX and inside the UKI for UEFI:
no loader reads both the ISO 9660 and the FAT file system.

Same inputs, same bytes: pycdlib would stamp the volume and every record with the local time of
the moment, and pick the MBR id and the GPT GUIDs at random; here the clock is fixed at
FAT_EPOCH (UTC) while pycdlib runs, and the ids are derived from the disc's contents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import struct
import tempfile
import time
import types
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pycdlib
import pycdlib.dates
import pycdlib.headervd
import pycdlib.pycdlib
import pycdlib.utils
from pycdlib.isohybrid import GPT, IsoHybrid
from pycdlib.pycdlibexception import PyCdlibException

from builder.errors import NetbuildError
from builder.filecopy import sha256_of
from builder.formats.iso import SECTOR, IsoFile, IsoListing, file_sha256, read_file, read_iso
from builder.writers.fatimage import FAT_EPOCH, FatFile, image_size, make_fat_image
from builder.writers.uki import Stub, write_uki

ISO_MODE = 0o644  # served to BMCs and other machines, whatever the umask
MAX_FILE = (1 << 32) - 1  # the largest file ISO 9660 describes in one extent (a 32-bit size)
FILE_MODE = 0o100444  # Rock Ridge modes, as the store's: read-only for all
DIRECTORY_MODE = 0o040555
ISOLINUX_DIR = "/isolinux"
ISOLINUX_BIN = f"{ISOLINUX_DIR}/isolinux.bin"
ISOLINUX_CFG = f"{ISOLINUX_DIR}/isolinux.cfg"
BOOT_CATALOG = f"{ISOLINUX_DIR}/boot.cat"
EFI_IMAGE = "/efiboot.img"
EFI_LOADER = "EFI/BOOT/BOOTX64.EFI"  # the removable-media path x86-64 UEFI firmware boots
# El Torito counts the sectors to load in 16 bits (512-byte units): 32 MiB at most. For a larger
# image the count is 0, which edk2-based firmware (OVMF, most PCs) takes as "to the end of the
# disc"; the MBR and GPT entries a USB stick is booted by carry the exact size.
_MAX_ELTORITO_SECTORS = 0xFFFF
_ISOLINUX_LOAD_SECTORS = 4  # what ISOLINUX's own documentation (and isohybrid) requires
_PYCDLIB_MODULES = (pycdlib.dates, pycdlib.headervd, pycdlib.pycdlib, pycdlib.utils)


@dataclass(frozen=True)
class Isolinux:
    """Debian's isolinux package and syslinux-common (or another distribution's syslinux)."""

    isolinux_bin: Path
    ldlinux_c32: Path
    isohdpfx_bin: Path  # the isohybrid MBR boot code


ISOLINUX_CANDIDATES = (
    Isolinux(Path("/usr/lib/ISOLINUX/isolinux.bin"), Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
             Path("/usr/lib/ISOLINUX/isohdpfx.bin")),  # Debian, Ubuntu: isolinux + syslinux-common
    Isolinux(Path("/usr/share/syslinux/isolinux.bin"), Path("/usr/share/syslinux/ldlinux.c32"),
             Path("/usr/share/syslinux/isohdpfx.bin")),  # Fedora, Arch: syslinux
)


def find_isolinux() -> Isolinux:
    for candidate in ISOLINUX_CANDIDATES:
        if all(p.is_file() for p in (candidate.isolinux_bin, candidate.ldlinux_c32, candidate.isohdpfx_bin)):
            return candidate
    first = ISOLINUX_CANDIDATES[0]
    raise NetbuildError(f"ISOLINUX not found (looked for {first.isolinux_bin}, {first.ldlinux_c32}, "
                        f"{first.isohdpfx_bin} and others): the disc boots BIOS machines with it; install it "
                        "(Debian: apt install isolinux syslinux-common)")


@dataclass(frozen=True)
class DiscFile:
    path: str  # as Linux shows it (Rock Ridge), e.g. /isolinux/isolinux.cfg
    source: Path | bytes
    sha256: str  # what its bytes must hash to: checked on the written disc

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


def disc_file(path: str, source: Path | bytes, sha256: str | None = None) -> DiscFile:
    """A file for the disc; its digest computed unless known (a large file of OUT: manifest.json's)."""
    return DiscFile(path, source, sha256 if sha256 is not None else sha256_of(source))




@dataclass(frozen=True)
class UkiToMake:
    """The UEFI loader, when OUT has no netboot.efi: made from these with builder.writers.uki."""

    stub: Stub
    kernel: Path
    initrd: Path
    cmdline: str
    osrel: bytes
    uname: str


@dataclass(frozen=True)
class Disc:
    """Everything the disc holds, decided before anything is written."""

    volume_id: str
    isolinux: Isolinux
    files: tuple[DiscFile, ...]  # besides ISOLINUX's own, the boot catalog and the UEFI image
    efi: tuple[FatFile, ...] | None  # the UEFI boot image's files; None: a BIOS-only disc
    uki: UkiToMake | None = None  # made first, as the UEFI image's EFI/BOOT/BOOTX64.EFI
    notes: tuple[str, ...] = field(default=())  # how each side boots, for the summary


def volume_id(name: str) -> str:
    """An ISO 9660 volume identifier: at most 32 d-characters (A-Z, 0-9, _)."""
    return _d_characters(name)[:32] or "NETBUILD"


def isolinux_cfg(*, description: str, kernel: str, initrd: str, append: str) -> bytes:
    """ISOLINUX boots the one entry at once, talking on the first serial port as well as the screen
    (a headless machine's serial console, a BMC's serial-over-LAN)."""
    lines = [f"# {description}", "SERIAL 0 115200", "DEFAULT netbuild", "PROMPT 0", "TIMEOUT 0",
             "LABEL netbuild", f"  LINUX {kernel}", f"  INITRD {initrd}"]
    if append:
        lines.append(f"  APPEND {append}")
    return ("\n".join(lines) + "\n").encode()


def check_sizes(disc: Disc) -> None:
    """Refuse, before writing, a file ISO 9660 can only hold in several extents (4 GiB or more).
    pycdlib could write them, but nothing on this disc could load one: ISOLINUX is a 32-bit loader
    and a UKI (PE32+) holds at most 4 GiB. The UEFI image is sized from its files here too."""
    for f in disc.files:
        if f.size > MAX_FILE:
            raise NetbuildError(f"{f.source if isinstance(f.source, Path) else f.path} is {f.size / (1 << 30):.1f} "
                                "GiB: an ISO 9660 file of 4 GiB or more needs several extents, and neither ISOLINUX "
                                "(a 32-bit loader) nor a unified kernel image (PE32+) can load that much; use the "
                                "squashfs layout or boot it over the network")
    if disc.efi is not None:
        payload = sum(len(f.source) if isinstance(f.source, bytes) else f.source.stat().st_size for f in disc.efi)
        if disc.uki is not None:
            payload += sum(p.stat().st_size for p in (disc.uki.stub.file, disc.uki.kernel, disc.uki.initrd))
        if image_size(payload) > MAX_FILE:
            raise NetbuildError(f"the UEFI boot image would be {image_size(payload) / (1 << 30):.1f} GiB: its unified "
                                "kernel image must stay below 4 GiB (PE32+, and FAT32's largest file); use the "
                                "squashfs layout or boot it over the network")


def write_iso(dest: Path, disc: Disc, *, log: Callable[[str], None] = lambda _: None) -> IsoListing:
    """Write dest in one step: everything goes to a directory beside it, the disc is read back and
    checked, and only then renamed into place. An error or an interrupt leaves dest as it was."""
    check_sizes(disc)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    except OSError as e:
        raise NetbuildError(f"{dest}: cannot create a directory beside it: {e.strerror}") from None
    try:
        efi_image = None
        if disc.efi is not None:
            efi_files = list(disc.efi)
            if disc.uki is not None:
                log(f"writing a unified kernel image for UEFI (systemd-stub from {disc.uki.stub.origin})")
                u = disc.uki
                write_uki(work / "BOOTX64.EFI", stub=u.stub, kernel=u.kernel, initrd=u.initrd, cmdline=u.cmdline,
                          osrel=u.osrel, uname=u.uname)
                efi_files.insert(0, FatFile(EFI_LOADER, work / "BOOTX64.EFI"))
            efi_image = work / "efiboot.img"
            log(f"writing the UEFI boot image (FAT, {', '.join(f.path for f in efi_files)})")
            identity = _identity(disc, efi_files)
            make_fat_image(efi_image, efi_files, volume_id=int.from_bytes(identity[:4], "big"),
                           label=disc.volume_id[:11])
        else:
            identity = _identity(disc, [])
        files = [*_isolinux_files(disc.isolinux), *disc.files]
        if efi_image is not None:
            files.append(disc_file(EFI_IMAGE, efi_image))
        staged = work / dest.name
        log(f"writing {dest.name} ({sum(f.size for f in files):,} bytes of files)")
        _master(staged, disc, files, efi_image, identity)
        listing = check_disc(staged, files, efi=efi_image is not None)
        os.chmod(staged, ISO_MODE)
        os.replace(staged, dest)
        return dataclasses.replace(listing, path=str(dest))
    except OSError as e:
        raise NetbuildError(f"writing {dest}: {e.strerror}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _isolinux_files(isolinux: Isolinux) -> list[DiscFile]:
    return [disc_file(ISOLINUX_BIN, isolinux.isolinux_bin), disc_file(f"{ISOLINUX_DIR}/ldlinux.c32",
                                                                      isolinux.ldlinux_c32)]


def _identity(disc: Disc, efi_files: Sequence[FatFile]) -> bytes:
    """A digest of what the disc holds: the seed of the ids that tell discs apart (FAT volume id,
    MBR id, GPT GUIDs), which pycdlib and mkfs.fat would otherwise draw at random."""
    h = hashlib.sha256(b"netbuild iso 1\0" + disc.volume_id.encode() + b"\0")
    for f in disc.files:
        h.update(f"{f.path}\0{f.sha256}\0".encode())
    for fat in efi_files:  # their sizes only, not a third read of them: the files above tell discs apart
        size = len(fat.source) if isinstance(fat.source, bytes) else fat.source.stat().st_size
        h.update(f"{fat.path}\0{size}\0".encode())
    return h.digest()


def _d_characters(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def iso9660_name(path: str, *, directory: bool = False) -> str:
    """The ISO 9660 name of a Rock Ridge path (level 3: d-characters; a file is 'NAME.EXT;1')."""
    *dirs, leaf = path.strip("/").split("/")
    if directory:
        return "/" + "/".join(_d_characters(d) for d in (*dirs, leaf))
    stem, _, ext = leaf.partition(".")
    return "/" + "/".join([*(_d_characters(d) for d in dirs), f"{_d_characters(stem)}.{_d_characters(ext)};1"])


@contextmanager
def fixed_clock(seconds: int) -> Iterator[None]:
    """pycdlib dates the volume and every record with time.time() in local time, and the volume's
    modification date again when writing: while this is active it sees `seconds`, in UTC."""
    clock = types.SimpleNamespace(
        time=lambda: float(seconds), localtime=time.gmtime, gmtime=time.gmtime,
        strftime=time.strftime, strptime=time.strptime, struct_time=time.struct_time,
    )
    saved = [module.time for module in _PYCDLIB_MODULES]
    # The ignores: mypy types each module's `time` as the time module; the stand-in has what pycdlib calls.
    try:
        for module in _PYCDLIB_MODULES:
            module.time = clock  # type: ignore[attr-defined]
        yield
    finally:
        for module, original in zip(_PYCDLIB_MODULES, saved, strict=True):
            module.time = original  # type: ignore[attr-defined]


class _Gpt(GPT):
    """pycdlib's GPT, whose entry array checksum covers the whole array (all 128 entries, as UEFI
    defines it): pycdlib's covers only the entries in use, which xorriso and firmware reject."""

    __slots__ = ()

    def record(self) -> bytes:
        entries: bytes = b"".join(part.record() for part in self.parts)
        entries += bytes(max(0, int(self.header.num_parts * self.header.size_of_partition_entries) - len(entries)))
        header: bytes = self.header.record(zlib.crc32(entries))  # pycdlib is untyped
        return header + entries if self.is_primary else entries + header


class _HybridTables(IsoHybrid):
    """pycdlib's isohybrid MBR and GPT, with these changes: the boot code is the installed
    isohdpfx.bin (made for the installed isolinux.bin), the ids come from the disc's contents, the
    GPT's checksums are right, and the EFI partition spans the whole FAT image, where pycdlib would
    take El Torito's 16-bit count."""

    __slots__ = ("efi_sectors",)
    efi_sectors: int

    def __init__(self) -> None:
        super().__init__()
        self.primary_gpt, self.secondary_gpt = _Gpt(True), _Gpt(False)

    def update_efi(self, current_extent: int, sector_count: int, iso_size: int) -> None:
        super().update_efi(current_extent, self.efi_sectors, iso_size)


def _hybrid(isohdpfx: bytes, identity: bytes, *, efi_bytes: int | None) -> IsoHybrid:
    if len(isohdpfx) != 432 or isohdpfx[:32] != IsoHybrid.ORIG_HEADER:
        raise NetbuildError("isohdpfx.bin: not the 432-byte isohybrid MBR code pycdlib lays out")
    tables = _HybridTables()
    tables.efi_sectors = -(-efi_bytes // 512) if efi_bytes is not None else 0
    tables.new(efi_bytes is not None, False, 1, int.from_bytes(identity[4:8], "little"), 0, 32, 64,
               0 if efi_bytes is not None else 0x17)
    tables.mbr = isohdpfx[32:]
    if efi_bytes is not None:
        disk, iso_part, efi_part = (uuid.UUID(bytes=hashlib.sha256(identity + role).digest()[:16], version=4)
                                    for role in (b"disk", b"iso", b"efi"))
        for gpt in (tables.primary_gpt, tables.secondary_gpt):
            gpt.header.disk_guid = disk
            gpt.parts[0].part_guid = iso_part
            gpt.parts[1].part_guid = efi_part
    return tables


def _master(staged: Path, disc: Disc, files: Sequence[DiscFile], efi_image: Path | None, identity: bytes) -> None:
    iso = pycdlib.PyCdlib()
    handles: list[io.BytesIO] = []
    try:
        with fixed_clock(FAT_EPOCH):
            iso.new(interchange_level=3, vol_ident=disc.volume_id, sys_ident="LINUX", app_ident_str="NETBUILD",
                    rock_ridge="1.09")
            made: set[str] = set()
            for f in sorted(files, key=lambda f: f.path):
                parts = f.path.strip("/").split("/")
                for depth in range(1, len(parts)):
                    directory = "/" + "/".join(parts[:depth])
                    if directory not in made:
                        iso.add_directory(iso9660_name(directory, directory=True), rr_name=parts[depth - 1],
                                          file_mode=DIRECTORY_MODE)
                        made.add(directory)
                if isinstance(f.source, bytes):
                    handles.append(io.BytesIO(f.source))
                    iso.add_fp(handles[-1], len(f.source), iso9660_name(f.path), rr_name=parts[-1],
                               file_mode=FILE_MODE)
                else:
                    iso.add_file(str(f.source), iso9660_name(f.path), rr_name=parts[-1], file_mode=FILE_MODE)
            iso.add_eltorito(iso9660_name(ISOLINUX_BIN), bootcatfile=iso9660_name(BOOT_CATALOG),
                             rr_bootcatname=BOOT_CATALOG.rsplit("/", 1)[1], boot_load_size=_ISOLINUX_LOAD_SECTORS,
                             boot_info_table=True, media_name="noemul")
            efi_bytes = efi_image.stat().st_size if efi_image is not None else None
            if efi_bytes is not None:
                sectors = -(-efi_bytes // 512)
                iso.add_eltorito(iso9660_name(EFI_IMAGE), efi=True, media_name="noemul",
                                 boot_load_size=sectors if sectors <= _MAX_ELTORITO_SECTORS else 0)
            iso.add_isohybrid(mbr_id=0, efi=efi_bytes is not None)  # its checks: ISOLINUX's signature, 4 sectors
            iso.isohybrid_mbr = _hybrid(disc.isolinux.isohdpfx_bin.read_bytes(), identity, efi_bytes=efi_bytes)
            with open(staged, "wb") as out:
                iso.write_fp(out, blocksize=1 << 20)
    except PyCdlibException as e:
        raise NetbuildError(f"pycdlib: {e}") from None
    finally:
        iso.close()
        for handle in handles:
            handle.close()


def check_disc(path: Path, files: Sequence[DiscFile], *, efi: bool) -> IsoListing:
    """Read the written disc back: its boot entries point at ISOLINUX and the UEFI image, and every
    file holds the bytes it should."""
    listing = read_iso(path)
    expected = [("BIOS", ISOLINUX_BIN)] + ([("UEFI", EFI_IMAGE)] if efi else [])
    found = [(b.platform, b.file) for b in listing.boot if b.bootable]
    if found != expected:
        raise NetbuildError(f"self-check: {path.name}: boot entries {found}, expected {expected}")
    tables = "MBR+GPT" if efi else "MBR"
    if listing.hybrid != tables:
        raise NetbuildError(f"self-check: {path.name}: partition tables {listing.hybrid}, expected {tables}")
    on_disc = {f.path: f for f in listing.files}
    for f in files:
        written = on_disc.get(f.path)
        if written is None:
            raise NetbuildError(f"self-check: {path.name}: {f.path} is missing")
        if f.path == ISOLINUX_BIN:
            _check_boot_info_table(path, written, f)
        elif written.size != f.size or file_sha256(path, written) != f.sha256:
            raise NetbuildError(f"self-check: {path.name}: {f.path} differs from "
                                f"{f.source if isinstance(f.source, Path) else 'what was written'}")
    extra = sorted(set(on_disc) - {f.path for f in files} - {BOOT_CATALOG})  # pycdlib's catalog file
    if extra:
        raise NetbuildError(f"self-check: {path.name}: unexpected {extra[0]}")
    return listing


def _check_boot_info_table(image: Path, written: IsoFile, source: DiscFile) -> None:
    """isolinux.bin as written: the source's bytes but for the 56-byte boot info table at offset 8
    (El Torito's -boot-info-table: where the volume descriptor and the file are, the file's length
    and a checksum of its bytes from offset 64), which ISOLINUX reads to find itself on the disc."""
    data = read_file(image, written)
    original = source.source.read_bytes() if isinstance(source.source, Path) else source.source
    pvd, lba, length, checksum = struct.unpack_from("<4I", data, 8)
    words = data[64:] + b"\0" * (-len(data[64:]) % 4)
    expected_sum = sum(struct.unpack(f"<{len(words) // 4}I", words)) & 0xFFFFFFFF
    if (len(data), data[:8], data[64:]) != (len(original), original[:8], original[64:]) or data[24:64].strip(b"\0"):
        raise NetbuildError(f"self-check: {image.name}: {written.path} differs from {source.source!s}")
    if (pvd, lba, length, checksum) != (16, written.offset // SECTOR, len(data), expected_sum):
        raise NetbuildError(f"self-check: {image.name}: {written.path} has a wrong boot info table")
