"""cpio "newc" (magic 070701), the archive format the kernel unpacks as its initramfs."""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from builder.formats import CHUNK, Buffer
from builder.formats.declared import DeclaredContents

MAGIC = b"070701"
# Bounds on what one archive may make a reader hold or do (a reader of an initrd it did not make):
PATH_MAX = 4096  # the kernel's (include/uapi/linux/limits.h): a longer name or symlink target cannot be made
MAX_ENTRIES = 1 << 19  # per archive (524,288): netbuild's hold at most 16 MiB, Debian's and NixOS's a few
#   thousand; a whole large closure in one archive (GNU cpio) stays under it, and reading this many takes seconds
CRC_MAGIC = b"070702"
HEADER_SIZE = 110  # magic + 13 fields of 8 hex digits
TRAILER_NAME = "TRAILER!!!"
MAX_FILE_SIZE = 0xFFFFFFFF  # filesize is a 32-bit field
_MAX_FIELD = 0xFFFFFFFF
_PERMISSION_BITS = 0o7777
_FIELD_NAMES = (
    "ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
    "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check",
)
_HEX_FIELD = re.compile(rb"[0-9a-fA-F]{8}")
_HEX_FIELDS = re.compile(rb"[0-9a-fA-F]{104}")  # the 13 fields of a header, after its magic
_FIELDS = struct.Struct(">13I")
_HEADER_FIELDS = MAGIC + b"%08X" * len(_FIELD_NAMES)


class CpioError(ValueError):
    """An entry the newc format cannot hold, a misused writer, or a malformed archive."""


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _encode_name(name: str) -> bytes:
    raw = os.fsencode(name)
    if not raw:
        raise CpioError("cpio entry with an empty name")
    if raw.startswith(b"/"):
        # The kernel would unpack it at the same place, but GNU cpio and bsdtar treat it as absolute.
        raise CpioError(f"{name}: cpio names are relative to the archive root, no leading '/'")
    if b"\0" in raw:
        raise CpioError(f"{name!r}: NUL in a cpio name")
    if raw == TRAILER_NAME.encode():
        raise CpioError(f"{name}: reserved name (it ends the archive)")
    return raw


def _check_permissions(name: str, mode: int) -> None:
    if mode & ~_PERMISSION_BITS or mode < 0:
        raise CpioError(f"{name}: mode {mode:#o} has bits beyond the permission bits 0o7777")


class CpioWriter:
    """Writes one newc archive: uid/gid 0, fixed mtime, sequential inodes, so the output is reproducible.

    Every entry gets nlink 1 and its own data: the kernel then never has to match hard links.
    """

    def __init__(self, write: Callable[[Buffer], None], *, mtime: int = 1, first_inode: int = 1) -> None:
        if not 0 <= mtime <= _MAX_FIELD:
            raise CpioError(f"mtime {mtime} does not fit the 32-bit cpio field")
        if not 0 <= first_inode <= _MAX_FIELD:
            raise CpioError(f"first_inode {first_inode} does not fit the 32-bit cpio field")
        self._write_raw = write
        self._mtime = mtime
        self._next_inode = first_inode
        self._offset = 0  # bytes written so far: padding is relative to the archive start
        self._entries = 0
        self._contents: DeclaredContents[str] = DeclaredContents(  # the open regular file, by name
            lambda name: CpioError(f"{name or 'no open file'}: more data than the size in its header"))
        self._closed = False

    @property
    def entries(self) -> int:
        """Entries written so far, not counting the trailer."""
        return self._entries

    @property
    def offset(self) -> int:
        """Bytes written so far."""
        return self._offset

    def _write(self, data: Buffer) -> None:
        self._offset += len(data)
        self._write_raw(data)

    def _header(
        self, name: str, raw_name: bytes, mode: int, size: int, *, nlink: int = 1, ino: int | None = None,
        mtime: int | None = None, rdev: tuple[int, int] = (0, 0),
    ) -> bytes:
        if size > MAX_FILE_SIZE:
            raise CpioError(f"{name}: {size} bytes is too large for cpio newc (4 GiB limit)")
        if ino is None:
            ino = self._next_inode
            if ino > _MAX_FIELD:
                raise CpioError(f"{name}: inode number {ino} overflows the 32-bit cpio field")
            self._next_inode += 1
        fields = (
            ino, mode, 0, 0, nlink, self._mtime if mtime is None else mtime, size,
            0, 0, rdev[0], rdev[1], len(raw_name) + 1, 0,
        )
        header = _HEADER_FIELDS % fields + raw_name + b"\0"  # one format for all 13 fields
        return header + _pad4(self._offset + len(header))

    def _begin(self, name: str) -> bytes:
        self._check_ready(name)
        return _encode_name(name)

    def _check_ready(self, name: str) -> None:
        if self._closed:
            raise CpioError(f"{name}: entry after the trailer")
        if (open_file := self._contents.entry) is not None:
            raise CpioError(f"{name}: begun while {open_file} lacks {self._contents.remaining} bytes of data")

    def directory(self, name: str, mode: int) -> None:
        raw = self._begin(name)
        _check_permissions(name, mode)
        self._write(self._header(name, raw, stat.S_IFDIR | mode, 0))
        self._entries += 1

    def regular(self, name: str, mode: int, size: int) -> None:
        """The header of a regular file; its size bytes follow through data()."""
        raw = self._begin(name)
        _check_permissions(name, mode)
        if size < 0:
            raise CpioError(f"{name}: negative size {size}")
        self._write(self._header(name, raw, stat.S_IFREG | mode, size))
        self._entries += 1
        if size:
            self._contents.open(name, size)

    def data(self, chunk: Buffer) -> None:
        if not chunk:
            return
        completed = self._contents.take(len(chunk))
        self._write(chunk)
        # Data starts 4-aligned, so padding its length pads the offset.
        if completed is not None and (padding := _pad4(self._contents.size)):
            self._write(padding)

    def file(self, name: str, mode: int, content: bytes) -> None:
        self.regular(name, mode, len(content))
        self.data(content)

    def symlink(self, name: str, target: bytes) -> None:
        raw = self._begin(name)
        if not target:
            raise CpioError(f"{name}: symlink with an empty target")
        self._write(self._header(name, raw, stat.S_IFLNK | 0o777, len(target)) + target + _pad4(len(target)))
        self._entries += 1

    def device(self, name: str, mode: int, kind: str, major: int, minor: int) -> None:
        raw = self._begin(name)
        _check_permissions(name, mode)
        type_bits = {"char": stat.S_IFCHR, "block": stat.S_IFBLK}.get(kind)
        if type_bits is None:
            raise CpioError(f"{name}: device kind {kind!r} is not 'char' or 'block'")
        for label, number in (("major", major), ("minor", minor)):
            if not 0 <= number <= _MAX_FIELD:
                raise CpioError(f"{name}: device {label} {number} does not fit the 32-bit cpio field")
        self._write(self._header(name, raw, type_bits | mode, 0, rdev=(major, minor)))
        self._entries += 1

    def trailer(self) -> None:
        self._check_ready(TRAILER_NAME)
        self._write(self._header(TRAILER_NAME, TRAILER_NAME.encode(), 0, 0, ino=0, mtime=0))
        self._closed = True


@dataclass(frozen=True, slots=True)
class CpioEntry:
    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    ino: int
    size: int
    rdevmajor: int
    rdevminor: int
    data: bytes  # file contents or symlink target (b'' for directories and devices)
    offset: int  # offset of the header within the stream




class _Reader:
    """Reads exactly what is asked, tracking the offset; short reads are truncation."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        try:
            self.start = stream.tell()
        except (OSError, AttributeError):
            self.start = 0  # a pipe: offsets are relative to where reading began
        self.position = 0  # relative to the archive start

    def read(self, count: int, what: str) -> bytes:
        if count <= CHUNK:  # headers, names, padding: one call, no generator (55k entries a second matter)
            data = self._stream.read(count)
            if len(data) == count:
                self.position += count
                return data
            if data:  # a short read from a pipe is not the end: gather the rest
                self.position += len(data)
                return data + self.read(count - len(data), what)
            raise CpioError(
                f"offset {self.start + self.position}: archive truncated in {what} (0 of {count} bytes)"
            )
        chunks = list(self._chunks(count, what))
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def skip(self, count: int, what: str) -> None:
        """Consume count bytes without keeping them: large files cost no memory."""
        skip_exactly = getattr(self._stream, "skip_exactly", None)
        if skip_exactly is not None:  # an in-memory stream moves its position instead of copying
            done = skip_exactly(count)
            self.position += done
            if done < count:
                raise CpioError(
                    f"offset {self.start + self.position}: archive truncated in {what} ({done} of {count} bytes)"
                )
            return
        for _ in self._chunks(count, what):
            pass

    def _chunks(self, count: int, what: str) -> Iterator[bytes]:
        # Pieces are collected, never concatenated one by one: that would be quadratic in the size.
        done = 0
        while done < count:
            chunk = self._stream.read(min(count - done, CHUNK))
            if not chunk:
                raise CpioError(
                    f"offset {self.start + self.position}: archive truncated in {what} ({done} of {count} bytes)"
                )
            done += len(chunk)
            self.position += len(chunk)
            yield chunk

    def padding(self, what: str) -> None:
        offset = self.start + self.position
        if self.read(-self.position % 4, what).strip(b"\0"):
            raise CpioError(f"offset {offset}: non-NUL bytes in the padding after {what}")


def _parse_header(header: bytes, offset: int, accept_crc: bool = False) -> dict[str, int]:
    magic = header[:6]
    crc = accept_crc and magic == CRC_MAGIC
    if magic != MAGIC and not crc:
        if magic == CRC_MAGIC:
            raise CpioError(f"offset {offset}: cpio 'crc' format (070702); only newc (070701) is read")
        raise CpioError(f"offset {offset}: bad cpio magic {magic!r}, expected {MAGIC!r}")
    if _HEX_FIELDS.fullmatch(header, 6, HEADER_SIZE):
        # All 13 fields at once: one regex, one hex decode, one unpack (per field: 13 of each).
        fields = dict(zip(_FIELD_NAMES, _FIELDS.unpack(bytes.fromhex(header[6:HEADER_SIZE].decode())), strict=True))
    else:
        for index, field_name in enumerate(_FIELD_NAMES):  # find the field to blame
            raw = header[6 + 8 * index : 14 + 8 * index]
            if not _HEX_FIELD.fullmatch(raw):
                raise CpioError(f"offset {offset}: field {field_name} is not 8 hex digits: {raw!r}")
        raise CpioError(f"offset {offset}: header of {len(header)} bytes, expected {HEADER_SIZE}")
    if fields["check"] != 0 and not crc:  # in the "crc" format it is a checksum of the data
        raise CpioError(f"offset {offset}: check field is {fields['check']:#x}, newc requires 0")
    if fields["namesize"] < 2:
        raise CpioError(f"offset {offset}: namesize {fields['namesize']} leaves no name")
    return fields


def read_archive(stream: BinaryIO, *, file_data: bool = True, accept_crc: bool = False) -> Iterator[CpioEntry]:
    """The entries of one newc archive, up to its TRAILER!!! (not yielded).

    Leaves the stream right after the trailer's padding, where a following archive may begin.
    With file_data=False regular files' contents are read past, not kept (their `data` is b''),
    so that checking a large archive takes constant memory; symlink targets are always kept.
    accept_crc=True also reads the "crc" variant (070702), which the kernel unpacks too: for
    looking at initrds netbuild did not make.
    """
    reader = _Reader(stream)
    entries = 0
    while True:
        offset = reader.start + reader.position
        fields = _parse_header(reader.read(HEADER_SIZE, "a header"), offset, accept_crc)
        if fields["namesize"] > PATH_MAX:
            raise CpioError(f"offset {offset}: limit reached: namesize {fields['namesize']} is more than the "
                            f"kernel's PATH_MAX ({PATH_MAX})")
        raw_name = reader.read(fields["namesize"], "a name")
        if raw_name[-1:] != b"\0" or b"\0" in raw_name[:-1]:
            raise CpioError(f"offset {offset}: name {raw_name!r} is not NUL-terminated at namesize")
        name = os.fsdecode(raw_name[:-1])
        reader.padding(f"name {name!r}")
        if name == TRAILER_NAME:
            if fields["filesize"]:
                raise CpioError(f"offset {offset}: {TRAILER_NAME} with filesize {fields['filesize']}")
            return
        entries += 1
        if entries > MAX_ENTRIES:
            raise CpioError(f"offset {offset}: limit reached: more than {MAX_ENTRIES} entries in one archive")
        if not stat.S_ISREG(fields["mode"]) and fields["filesize"] > PATH_MAX:
            # A symlink's data is its target; other kinds have none the kernel uses: kept in memory, so bounded.
            raise CpioError(f"offset {offset}: limit reached: {name!r} is not a regular file but carries "
                            f"{fields['filesize']} bytes (a symlink target is at most {PATH_MAX})")
        if file_data or not stat.S_ISREG(fields["mode"]):
            data = reader.read(fields["filesize"], f"data of {name!r}")
        else:
            reader.skip(fields["filesize"], f"data of {name!r}")
            data = b""
        reader.padding(f"data of {name!r}")
        yield CpioEntry(
            name=name,
            mode=fields["mode"],
            uid=fields["uid"],
            gid=fields["gid"],
            nlink=fields["nlink"],
            mtime=fields["mtime"],
            ino=fields["ino"],
            size=fields["filesize"],
            rdevmajor=fields["rdevmajor"],
            rdevminor=fields["rdevminor"],
            data=data,
            offset=offset,
        )
