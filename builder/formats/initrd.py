"""An initrd file as the kernel reads it (init/initramfs.c): its members, and the one scanner that
finds them.

The kernel reads members back to back, skipping NUL bytes between them: a plain newc cpio archive
starts at a multiple of 4 with "0707" (Debian's early microcode is one, and must come first), and
is one archive; anything else must start with the magic of a codec of the table
(builder/formats/compress.py), and its one stream may hold several archives, NULs between them.

`InitrdReader` walks a file that way, member by member, as u-root's cpio RecordReader walks an
archive record by record, and every consumer wraps it with a policy of its own: `netbuild inspect`
(lenient: the crc variant, several archives in one stream), the toplevel's stage 1 (only what
netbuild can check), the tests. Each member comes as an `OpenMember`: where it starts, its codec,
its plain bytes and its cpio entries (builder/formats/cpio.py reads them); where it ends is known
once it has been read. The self-check instead opens each member where the manifest says it is,
bounded by the size recorded for it (`open_member`). `Member` is what is known of a member once
read — where it lies and what it holds — as writers record it and manifest.json lists it. (The
words member, archive, codec and stream are the glossary's, in builder/__init__.py.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from builder.formats import CHUNK
from builder.formats.compress import CODECS, NONE, Codec, detect
from builder.formats.cpio import CpioEntry, read_archive
from builder.formats.streams import ByteRange, PlainReader

_SCAN = 1 << 16


@dataclass(frozen=True)
class Member:
    """One member of an initrd, described: a cpio stream, plain or compressed as one stream of a codec."""

    role: str  # what it holds, for people reading the manifest: "store", "stage1", "squashfs", …
    offset: int  # where it starts in the initrd file
    size: int  # bytes it occupies in the file
    compression: str  # the codec's name: "zstd", "gzip", "xz" or "none"
    plain_size: int  # bytes of cpio once decompressed
    plain_sha256: str  # of those bytes
    entries: int  # cpio records before the trailer
    sha256: str | None = None  # of the member's bytes as written, when the writer recorded it
    # The cache entry the bytes were copied from, if any: the self-check drops it when they differ.
    cache_key: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "role": self.role,
            "offset": self.offset,
            "size": self.size,
            "compression": self.compression,
            "entries": self.entries,
            "uncompressedSize": self.plain_size,
            "uncompressedSha256": self.plain_sha256,
        }
        if self.sha256 is not None:
            doc["sha256"] = self.sha256
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Member:
        """As to_json wrote it; ValueError for any other shape (a manifest read back may be anyone's).
        Numbers must be JSON integers within a file's reach (no bool, float, NaN, negative, huge)."""
        if not isinstance(doc, Mapping):
            raise ValueError("a member is not an object")
        sha256 = doc.get("sha256")
        return cls(
            role=_text(doc, "role"),
            offset=_count(doc, "offset"),
            size=_count(doc, "size"),
            compression=_text(doc, "compression"),
            plain_size=_count(doc, "uncompressedSize"),
            plain_sha256=_text(doc, "uncompressedSha256"),
            entries=_count(doc, "entries"),
            sha256=None if sha256 is None else _text(doc, "sha256"),
        )


_MAX_COUNT = (1 << 63) - 1  # a file offset or size: off_t


def _count(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_COUNT:
        raise ValueError(f"{key} is not a count of bytes or entries: {str(value)[:40]}")
    return value


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or "\0" in value:
        raise ValueError(f"{key} is not a string")
    return value


class _Plain:
    """A member's plain bytes as the cpio reader takes them: counted (and hashed) as they are
    consumed, read from the source in large pieces, with look-ahead for skipping NULs."""

    def __init__(self, source: ByteRange | PlainReader, digest: bool) -> None:
        self._source = source
        self._ahead = b""  # read from the source, not consumed from _at on
        self._at = 0
        self.size = 0
        self.sha256 = hashlib.sha256() if digest else None

    def _consumed(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        return data

    def read(self, size: int) -> bytes:
        if self._at + size <= len(self._ahead):
            self._at += size
            return self._consumed(self._ahead[self._at - size : self._at])
        head = self._ahead[self._at :]
        self._ahead, self._at = b"", 0
        wanted = size - len(head)
        if wanted >= _SCAN:  # a file's data: straight from the source
            return self._consumed(head + self._source.read(wanted))
        self._ahead = self._source.read(_SCAN)
        self._at = min(wanted, len(self._ahead))
        return self._consumed(head + self._ahead[: self._at])

    def _fill(self) -> bool:
        """Something to look at in _ahead; False at the end of the stream."""
        if self._at == len(self._ahead):
            self._ahead, self._at = self._source.read(_SCAN), 0
        return self._at < len(self._ahead)

    def at_end(self) -> bool:
        return not self._fill()

    def skip_nuls(self) -> None:
        while self._fill():
            rest = self._ahead[self._at :]
            nuls = len(rest) - len(rest.lstrip(b"\0"))
            self.read(nuls)
            if nuls < len(rest):
                return


class OpenMember:
    """One member of an initrd file, being read: where it starts (`offset`), what starts it (`kind`:
    'cpio', a codec's name, or None for bytes the kernel would reject), its `codec` (NONE for a
    plain archive), its plain bytes and its cpio entries. Its `size` is known once it has been read
    to its end (`finish`), or from the start when it was opened with one."""

    def __init__(self, file: ByteRange, offset: int, *, index: int = 0, codec: Codec | None = None,
                 size: int | None = None, digests: bool = False) -> None:
        self.index = index
        self.offset = offset
        self.head = file.read_at(offset, 8)
        self.kind = detect(self.head)
        if codec is None and self.kind is not None:
            codec = NONE if self.kind == "cpio" else CODECS[self.kind]
        self.codec = codec
        self._bounded = size is not None
        # A plain member found by scanning is one archive: the file after its trailer is the next member's.
        self._one_archive = codec is NONE and not self._bounded
        self._raw = ByteRange(file, offset, size, digest=hashlib.sha256() if digests and size is not None else None)
        self._digests = digests
        self._reader: PlainReader | None = None
        self._plain: _Plain | None = None
        self._archive: Iterator[CpioEntry] | None = None

    @property
    def misaligned(self) -> bool:
        """A plain archive not at a multiple of 4, which the kernel takes for compressed data and rejects."""
        return self.codec is NONE and self.offset % 4 != 0

    @property
    def plain(self) -> _Plain:
        """The member's plain bytes (its decoder is started here, so errors come when reading)."""
        if self._plain is None:
            if self.codec is None:
                raise ValueError(f"offset {self.offset}: not a member the kernel knows")
            if self.codec is NONE:
                self._plain = _Plain(self._raw, self._digests)
            else:
                self._reader = self.codec.reader(self._raw)
                self._plain = _Plain(self._reader, self._digests)
        return self._plain

    def entries(self, *, accept_crc: bool = False, file_data: bool = False) -> Iterator[CpioEntry]:
        """The entries of the next archive in the member, up to its trailer (not yielded)."""
        # self.plain reads like a file (read, skip_exactly), all the cpio reader asks of one.
        self._archive = read_archive(self.plain, file_data=file_data, accept_crc=accept_crc)  # type: ignore[arg-type]
        return self._archive

    def archives(self, *, accept_crc: bool = False, file_data: bool = False) -> Iterator[Iterator[CpioEntry]]:
        """The entries of each archive in turn: a plain member is one archive; a compressed one holds
        as many as there are, NULs between them."""
        if self._one_archive:
            yield self.entries(accept_crc=accept_crc, file_data=file_data)
            return
        while True:
            self.plain.skip_nuls()
            if self.plain.at_end():
                return
            yield self.entries(accept_crc=accept_crc, file_data=file_data)

    def rest_is_padding(self) -> bool:
        """Reads the rest of the member's plain bytes: are they only NULs (padding after a trailer,
        which the kernel skips)? A plain member found by scanning ends at its archive's trailer."""
        if self._one_archive:
            return True
        while chunk := self.plain.read(_SCAN):
            if chunk.strip(b"\0"):
                return False
        return True

    def bytes_after_stream(self) -> bool:
        """Whether the member's bounds hold bytes after its compressed stream ends (once read)."""
        return self._reader is not None and self._reader.consumed < len(self._raw)

    def finish(self) -> None:
        """Read the member to its end: what the consumer left of its archive, and of its stream."""
        if self._one_archive and self._archive is None:
            self.entries()
        if self._archive is not None:
            for _ in self._archive:
                pass
        if not self._one_archive:
            while self.plain.read(CHUNK):
                pass

    @property
    def size(self) -> int:
        """Bytes of the file the member occupies."""
        if self._bounded:
            return len(self._raw)
        if self.codec is NONE:
            return self.plain.size
        assert self._reader is not None and self._reader.done, "size asked of a member not read to its end"
        return self._reader.consumed

    @property
    def plain_size(self) -> int:
        return self.plain.size

    @property
    def plain_sha256(self) -> str:
        assert self.plain.sha256 is not None, "opened without digests"
        return self.plain.sha256.hexdigest()

    @property
    def sha256(self) -> str:
        """Of the member's bytes (opened with a size and digests, and read to its end)."""
        assert self._raw.digest is not None, "opened without a size or without digests"
        return str(self._raw.digest.hexdigest())

    def record(self, role: str, entries: int) -> Member:
        """The member described, once read (opened with digests)."""
        self.finish()
        assert self.codec is not None
        return Member(role=role, offset=self.offset, size=self.size, compression=self.codec.name,
                      plain_size=self.plain_size, plain_sha256=self.plain_sha256, entries=entries)


def open_member(f: BinaryIO | bytes | ByteRange, offset: int, *, size: int | None = None, codec: Codec | None = None,
                digests: bool = False) -> OpenMember:
    """The member at offset of an initrd file (or its bytes). size bounds it — the bytes it must fill
    exactly, as a manifest records them — otherwise it ends where its archive or stream does. codec
    says what it is (NONE: a plain archive, whatever it starts with) instead of its magic. digests:
    the sha256 of its plain bytes and, with a size, of its own."""
    return OpenMember(ByteRange(f), offset, codec=codec, size=size, digests=digests)


class InitrdReader:
    """Walks an initrd as the kernel does: NUL padding skipped, then one member, read to its end,
    then the next. Iterating gives the members in order (each must be dealt with before asking for
    the next); a member whose `codec` is None (bytes the kernel rejects) is the last. `padding`
    counts the NUL bytes skipped so far."""

    def __init__(self, f: BinaryIO | bytes | ByteRange, *, digests: bool = False) -> None:
        self._file = ByteRange(f)  # a ByteRange: an initrd inside a larger file (a UKI's .initrd section)
        self._digests = digests
        self.padding = 0

    def __iter__(self) -> Iterator[OpenMember]:
        offset = self._skip_nuls(0)
        index = 0
        while offset < len(self._file):
            member = OpenMember(self._file, offset, index=index, digests=self._digests)
            yield member
            if member.codec is None:
                return  # nothing says where it ends
            member.finish()
            offset = self._skip_nuls(member.offset + member.size)
            index += 1

    def _skip_nuls(self, offset: int) -> int:
        while chunk := self._file.read_at(offset, _SCAN):
            nuls = len(chunk) - len(chunk.lstrip(b"\0"))
            self.padding += nuls
            offset += nuls
            if nuls < len(chunk):
                break
        return offset
