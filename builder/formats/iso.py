"""ISO 9660 images as netbuild reads them back: the volume, the El Torito boot catalog, the files
and the hybrid partition tables in front of it, through pycdlib (the library that writes them too).

Bytes only, no policy: what `netbuild inspect FILE.iso` lists, and what the ISO writer's self-check
and `netbuild check --iso` compare with what should be there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from builder.errors import NetbuildError
from builder.formats import CHUNK

SECTOR = 2048  # an ISO 9660 logical block, the unit of El Torito's LBAs
_DESCRIPTOR_MAGIC_AT = 16 * SECTOR + 1  # "CD001" in the first volume descriptor
PLATFORMS = {0x00: "BIOS", 0x01: "PowerPC", 0x02: "Mac", 0xEF: "UEFI"}
EMULATIONS = {0: "no emulation", 1: "1.2M floppy", 2: "1.44M floppy", 3: "2.88M floppy", 4: "hard disk"}
_BOOTABLE = 0x88


@dataclass(frozen=True)
class BootEntry:
    """One bootable entry of the El Torito catalog."""

    platform: str  # BIOS, UEFI, …
    emulation: str
    bootable: bool
    lba: int  # where the boot image starts, in 2048-byte sectors
    sectors: int  # 512-byte sectors the firmware is told to load (UEFI: 0 means "to the end")
    file: str | None  # the file on the ISO at that LBA, if any

    def to_json(self) -> dict[str, object]:
        return {"platform": self.platform, "emulation": self.emulation, "bootable": self.bootable,
                "lba": self.lba, "sectors": self.sectors, "file": self.file}


@dataclass(frozen=True)
class IsoFile:
    path: str  # Rock Ridge name when the image has them (as Linux shows it), else the ISO 9660 one
    size: int
    offset: int  # byte offset of its data in the image (netbuild writes every file as one extent)

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "offset": self.offset}


@dataclass(frozen=True)
class IsoListing:
    path: str
    size: int
    volume_id: str
    hybrid: str | None  # "MBR" or "MBR+GPT" (isohybrid: boots from a USB stick too), None for a CD only
    boot: list[BootEntry]
    files: list[IsoFile]

    def file(self, path: str) -> IsoFile | None:
        return next((f for f in self.files if f.path == path), None)

    def to_json(self) -> dict[str, object]:
        return {"file": self.path, "size": self.size, "volumeId": self.volume_id, "hybrid": self.hybrid,
                "boot": [b.to_json() for b in self.boot], "files": [f.to_json() for f in self.files]}


def is_iso(path: Path) -> bool:
    """Whether path holds an ISO 9660 file system (what `netbuild inspect` and `boot` dispatch on)."""
    try:
        with open(path, "rb") as f:
            f.seek(_DESCRIPTOR_MAGIC_AT)
            return f.read(5) == b"CD001"
    except OSError:
        return False


def read_iso(path: Path) -> IsoListing:
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except OSError as e:
        raise NetbuildError(f"{path}: cannot read: {e.strerror}") from None
    except PyCdlibException as e:
        raise NetbuildError(f"{path}: not an ISO 9660 image pycdlib can read ({e})") from None
    try:
        files = _files(iso)
        by_lba = {f.offset // SECTOR: f.path for f in files}
        volume_id = iso.pvd.volume_identifier.decode("ascii", "replace").rstrip()
        hybrid = None
        if iso.isohybrid_mbr is not None:
            hybrid = "MBR+GPT" if iso.isohybrid_mbr.efi else "MBR"
        return IsoListing(str(path), path.stat().st_size, volume_id, hybrid, _boot_entries(iso, by_lba), files)
    finally:
        iso.close()


def _files(iso: pycdlib.PyCdlib) -> list[IsoFile]:
    rock_ridge = iso.has_rock_ridge()
    key = "rr_path" if rock_ridge else "iso_path"
    found = []
    for directory, _, names in iso.walk(**{key: "/"}):
        for name in names:
            path = f"{directory.rstrip('/')}/{name}"
            record = iso.get_record(**{key: path})
            found.append(IsoFile(path, record.get_data_length(), record.extent_location() * SECTOR))
    return sorted(found, key=lambda f: f.path)


def _boot_entries(iso: pycdlib.PyCdlib, by_lba: dict[int, str]) -> list[BootEntry]:
    catalog = iso.eltorito_boot_catalog
    if catalog is None:
        return []
    entries = [(catalog.validation_entry.platform_id, catalog.initial_entry)]
    for section in catalog.sections:
        entries += [(section.platform_id, entry) for entry in section.section_entries]
    return [BootEntry(PLATFORMS.get(platform, f"platform {platform:#x}"),
                      EMULATIONS.get(entry.boot_media_type, f"type {entry.boot_media_type}"),
                      entry.boot_indicator == _BOOTABLE, entry.load_rba, entry.sector_count,
                      by_lba.get(entry.load_rba))
            for platform, entry in entries]


def file_sha256(image: Path, f: IsoFile) -> str:
    """The sha256 of a file's bytes, read from the image where its record says they are."""
    h = hashlib.sha256()
    left = f.size
    with open(image, "rb") as src:
        src.seek(f.offset)
        while left:
            chunk = src.read(min(left, CHUNK))
            if not chunk:
                raise NetbuildError(f"{image}: ends inside {f.path}")
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def read_file(image: Path, f: IsoFile, limit: int = 1 << 20) -> bytes:
    """A small file's bytes (a configuration file, a script)."""
    if f.size > limit:
        raise NetbuildError(f"{image}: {f.path} is {f.size} bytes, more than a configuration file")
    with open(image, "rb") as src:
        src.seek(f.offset)
        return src.read(f.size)
