"""A Linux kernel's build configuration (.config): parse it, pull it out of a bzImage built with
CONFIG_IKCONFIG, and know where else it usually lies.

The embedded copy sits in the decompressed kernel between the markers "IKCFG_ST" and "IKCFG_ED",
gzip-compressed (the kernel's scripts/extract-ikconfig finds it the same way). A bzImage's
payload is the compressed kernel; the boot header (protocol 2.08+) says where it is. Every codec
involved is one of the table's (builder/formats/compress.py), as is each codec's CONFIG_RD_* option.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.formats import CHUNK
from builder.formats.bzimage import setup_size
from builder.formats.compress import CODECS, GZIP, detect
from builder.formats.streams import CompressionError

IKCFG_START = b"IKCFG_ST"
IKCFG_END = b"IKCFG_ED"
_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
INITRD_OPTION = "CONFIG_BLK_DEV_INITRD"  # without it the kernel ignores any initrd


class KconfigError(ValueError):
    """A file that is not a kernel configuration, or an embedded one that cannot be read."""


@dataclass(frozen=True)
class KernelConfig:
    source: str  # where it was found, for messages: a file name or "<kernel> (embedded IKCONFIG)"
    options: dict[str, str]  # CONFIG_X -> "y", "m", a value, or "n" for "# CONFIG_X is not set"

    def enabled(self, option: str) -> bool:
        return self.options.get(option, "n") in ("y", "m")


def parse_config(text: str, source: str) -> KernelConfig:
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _LINE.match(line):
            options[match[1]] = match[2]
        elif match := _NOT_SET.match(line):
            options[match[1]] = "n"
    if not options:
        raise KconfigError(f"{source}: no CONFIG_ lines: not a kernel .config")
    return KernelConfig(source, options)


def read_config_file(path: Path) -> KernelConfig:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KconfigError(f"{path}: cannot read: {e.strerror}") from None
    if detect(raw) == GZIP.name:  # /proc/config.gz copied out of a running system
        try:
            raw, _ = GZIP.decompress(raw)
        except CompressionError as e:
            raise KconfigError(f"{path}: broken gzip: {e.reason}") from None
    return parse_config(raw.decode("utf-8", "replace"), str(path))


def config_beside(kernel: Path, release: str) -> Path | None:
    """A configuration file next to the kernel: `config` or `.config` in its directory (a Nix
    store path holding bzImage), or Debian's /boot/config-<release> beside /boot/vmlinuz-<release>."""
    names = ["config", ".config"]
    if release:
        names.append(f"config-{release}")
    for name in names:
        candidate = kernel.parent / name
        if candidate.is_file():
            return candidate
    return None


def payload(image: bytes) -> tuple[str, bytes] | None:
    """The compressed kernel inside a bzImage (boot protocol 2.08+): (codec, bytes), or None."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS" or struct.unpack_from("<H", image, 0x206)[0] < 0x208:
        return None
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = setup_size(image[0x1F1]) + offset
    data = image[start : start + length]
    codec = detect(data[:8])
    if codec is None or codec == "cpio" or len(data) != length:
        return None
    return codec, data


def embedded_config_text(image: bytes, name: str) -> str | None:
    """The text of the IKCONFIG copy in a bzImage (or an uncompressed vmlinux), None when it has none."""
    found = _config_blob(iter([image]))
    if found is None:
        packed = payload(image)
        if packed is None:
            return None
        try:
            found = _config_blob(_decompressed(*packed))
        except CompressionError as e:
            raise KconfigError(f"{name}: cannot decompress the kernel to look for IKCONFIG: {e}") from None
    if found is None:
        return None
    try:
        return GZIP.decompress(found)[0].decode("utf-8", "replace")
    except CompressionError as e:
        raise KconfigError(f"{name}: the embedded IKCONFIG is not valid gzip: {e.reason}") from None


def _decompressed(codec: str, data: bytes) -> Iterator[bytes]:
    """The plain bytes of the one member of codec at the start of data, in pieces."""
    reader = CODECS[codec].reader(data)
    while chunk := reader.read(CHUNK):
        yield chunk


def _config_blob(chunks: Iterator[bytes]) -> bytes | None:
    """The bytes between IKCFG_ST and IKCFG_ED in a stream, keeping only a small tail in memory
    until the start marker is seen (a decompressed kernel is tens of MiB)."""
    window = b""
    collected: bytearray | None = None
    for chunk in chunks:
        if collected is None:
            window += chunk
            start = window.find(IKCFG_START)
            if start < 0:
                window = window[-(len(IKCFG_START) - 1) :]
                continue
            collected = bytearray(window[start + len(IKCFG_START) :])
        else:
            collected += chunk
        end = collected.find(IKCFG_END)
        if end >= 0:
            return bytes(collected[:end])
    return None
