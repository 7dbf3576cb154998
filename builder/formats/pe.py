"""PE/COFF images as a unified kernel image needs them: a stub (systemd-stub) with sections added.

pefile (the library ukify itself uses) parses and rewrites the headers; the sections' data is
written by the caller, streamed, so that an image of any size is never held in memory — which is
where this departs from ukify, which appends every section's bytes to pefile's in-memory copy.

Section placement follows ukify (systemd's src/ukify/ukify.py, pe_add_sections): each new
section's virtual address is the previous section's end rounded up to SectionAlignment, its data
at the file's end rounded up to FileAlignment; the headers gain one 40-byte entry per section,
which must fit before the first section's data (SizeOfHeaders).
"""

from __future__ import annotations

from dataclasses import dataclass

import pefile

_SECTION_HEADER_SIZE = 40
_SCN_CNT_CODE = 0x00000020
_SCN_CNT_INITIALIZED_DATA = 0x00000040
_SCN_MEM_READ = 0x40000000
# The largest image PE32+ can describe: SizeOfImage and every section size are 32-bit fields.
MAX_IMAGE_SIZE = (1 << 32) - 1
MACHINES = {0x8664: "x86_64", 0xAA64: "aarch64"}


class PEError(ValueError):
    """Not a PE image this can extend, or sections that do not fit."""


@dataclass(frozen=True)
class NewSection:
    name: str  # at most 8 ASCII characters (systemd-stub reads no longer names)
    size: int  # bytes of data
    virtual_size: int = 0  # what the loader maps, if more than size (.linux: the kernel's SizeOfImage)
    code: bool = False  # .linux: old stubs run the kernel in place through the EFI handover protocol


@dataclass(frozen=True)
class PlacedSection:
    name: str
    virtual_address: int
    virtual_size: int
    offset: int  # where its data starts in the file
    size: int  # bytes of data at offset, before the padding to FileAlignment
    raw_size: int  # data plus padding


@dataclass(frozen=True)
class Section:
    """A section as an image's headers describe it."""

    name: str
    virtual_address: int
    virtual_size: int
    offset: int
    raw_size: int


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _name(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


def read_sections(data: bytes, *, what: str = "image") -> tuple[str, list[Section]]:
    """The machine (x86_64, aarch64) and the sections of a PE image's headers (give the whole
    file or at least its headers)."""
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as e:
        raise PEError(f"{what}: not a PE image ({e.value})") from None
    machine = MACHINES.get(pe.FILE_HEADER.Machine, f"machine {pe.FILE_HEADER.Machine:#x}")
    return machine, [Section(_name(s.Name), s.VirtualAddress, s.Misc_VirtualSize, s.PointerToRawData,
                             s.SizeOfRawData) for s in pe.sections]


def size_of_image(data: bytes, *, what: str) -> int:
    """SizeOfImage of a PE image (an EFI-stub kernel's: what it needs mapped to start)."""
    try:
        return int(pefile.PE(data=data, fast_load=True).OPTIONAL_HEADER.SizeOfImage)
    except pefile.PEFormatError as e:
        raise PEError(f"{what}: not a PE image ({e.value})") from None


def add_sections(stub: bytes, sections: list[NewSection], *, what: str = "stub") -> tuple[bytes, list[PlacedSection]]:
    """The stub's bytes with headers for `sections` appended after its own, and where each new
    section's data must go. The caller writes the returned bytes, then each section's data at its
    offset (zero bytes between): the image is complete once the last raw_size is written."""
    try:
        pe = pefile.PE(data=stub, fast_load=True)
    except pefile.PEFormatError as e:
        raise PEError(f"{what}: not a PE image ({e.value})") from None
    security = pe.OPTIONAL_HEADER.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]]
    if security.VirtualAddress:
        raise PEError(f"{what}: the stub is signed; a signature would not cover the added sections")
    if not pe.sections:
        raise PEError(f"{what}: a PE image without sections is no systemd-stub")
    file_alignment = pe.OPTIONAL_HEADER.FileAlignment
    section_alignment = pe.OPTIONAL_HEADER.SectionAlignment
    # The space before the first section's data is unused: headers may grow into it (ukify does too).
    pe.OPTIONAL_HEADER.SizeOfHeaders = _round_up(pe.OPTIONAL_HEADER.SizeOfHeaders, file_alignment)
    end_of_headers = pe.sections[-1].get_file_offset() + _SECTION_HEADER_SIZE
    if end_of_headers + len(sections) * _SECTION_HEADER_SIZE > pe.OPTIONAL_HEADER.SizeOfHeaders:
        raise PEError(f"{what}: no room in its headers for {len(sections)} more sections")
    for section in sections:
        if not section.name.isascii() or not 0 < len(section.name) <= 8:
            raise PEError(f"section name {section.name!r}: 1 to 8 ASCII characters")

    data_end = max(s.PointerToRawData + s.SizeOfRawData for s in pe.sections)
    symbols = pe.FILE_HEADER.PointerToSymbolTable
    if len(stub) > data_end and symbols >= data_end:
        # A COFF symbol table after the sections (Debian 12's stub has one): debug data no firmware
        # reads. Dropped, so that the new sections follow the stub's without a gap, which
        # Authenticode hashing (sbsign) would otherwise have to guess about.
        pe.FILE_HEADER.PointerToSymbolTable = 0
        pe.FILE_HEADER.NumberOfSymbols = 0
        kept = data_end
    else:
        kept = len(stub)
    offset = _round_up(kept, file_alignment)
    previous = pe.sections[-1]
    virtual_end = previous.VirtualAddress + previous.Misc_VirtualSize
    placed: list[PlacedSection] = []
    for index, section in enumerate(sections):
        header = pefile.SectionStructure(pe.__IMAGE_SECTION_HEADER_format__, pe=pe)
        header.__unpack__(b"\0" * header.sizeof())
        header.set_file_offset(end_of_headers + index * _SECTION_HEADER_SIZE)
        virtual_address = _round_up(virtual_end, section_alignment)
        virtual_size = max(section.size, section.virtual_size)
        raw_size = _round_up(section.size, file_alignment)
        header.Name = section.name.encode()
        header.Misc_VirtualSize = virtual_size
        header.VirtualAddress = virtual_address
        header.PointerToRawData = offset
        header.SizeOfRawData = raw_size
        header.Characteristics = _SCN_MEM_READ | (_SCN_CNT_CODE if section.code else _SCN_CNT_INITIALIZED_DATA)
        pe.__structures__.append(header)
        pe.sections.append(header)
        pe.FILE_HEADER.NumberOfSections += 1
        if not section.code:
            pe.OPTIONAL_HEADER.SizeOfInitializedData += virtual_size
        placed.append(PlacedSection(section.name, virtual_address, virtual_size, offset, section.size, raw_size))
        offset += raw_size
        virtual_end = virtual_address + virtual_size
    size_of_image = _round_up(virtual_end, section_alignment)
    if size_of_image > MAX_IMAGE_SIZE or offset > MAX_IMAGE_SIZE:
        raise PEError(f"the image would be {max(size_of_image, offset):,} bytes: PE32+ describes at most "
                      f"{MAX_IMAGE_SIZE:,} (4 GiB); use the iPXE path or the squashfs layout")
    pe.OPTIONAL_HEADER.SizeOfImage = size_of_image
    pe.OPTIONAL_HEADER.CheckSum = 0  # UEFI does not check it; a signature covers the bytes instead
    return bytes(pe.write())[:kept], placed
