"""Linux kernel modules: the `.modinfo` section of a `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz` file.

`.modinfo` is a sequence of NUL-terminated `key=value` strings that modpost and MODULE_INFO()
put into every module: `name`, `depends` (comma-separated module names), `softdep`
(`pre: a b post: c`, possibly several times), `vermagic` (the kernel release and the build flags
the module was made for), `alias` (many), `license`, `firmware`, … This module only reads bytes;
what to load, and whether a vermagic fits a kernel, is decided in builder/stage1/modules.py.

The ELF parsing is pyelftools'; compressed modules (the formats `CONFIG_MODULE_COMPRESS_*`
produces) are decompressed by the codec table, builder/formats/compress.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from builder.formats.compress import CODECS
from builder.formats.streams import CompressionError

# Longest first, so that `.ko.xz` is not taken for `.ko`.
COMPRESSED_SUFFIXES = {".ko.xz": "xz", ".ko.zst": "zstd", ".ko.gz": "gzip"}
SUFFIXES = (*COMPRESSED_SUFFIXES, ".ko")
MAX_MODULE_SIZE = 1 << 30  # the largest real modules are tens of MiB


class KmodError(ValueError):
    """Bytes that are not a kernel module, or a compressed module that cannot be decompressed."""


@dataclass(frozen=True)
class SoftDeps:
    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModuleInfo:
    name: str  # '' when the module does not say (kernels before 5.4 kept it elsewhere)
    depends: tuple[str, ...]  # module names, in the order modpost wrote them
    softdeps: SoftDeps
    vermagic: str  # e.g. '6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions '
    aliases: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]  # every key=value, in section order

    @property
    def vermagic_release(self) -> str:
        """The kernel release the module was built for: the first word of vermagic."""
        words = self.vermagic.split()
        return words[0] if words else ""

    def values(self, key: str) -> list[str]:
        return [value for k, value in self.fields if k == key]


def module_suffix(filename: str) -> str | None:
    """The module suffix filename ends with ('.ko', '.ko.xz', …), or None if it is not a module."""
    for suffix in SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return suffix
    return None


def normalize_name(name: str) -> str:
    """The kernel treats '-' and '_' in module names as the same character; '_' is canonical."""
    return name.replace("-", "_")


def module_name_from_filename(filename: str) -> str:
    """'crc32c-intel.ko.zst' -> 'crc32c_intel'."""
    suffix = module_suffix(filename)
    if suffix is None:
        raise KmodError(f"{filename}: not a kernel module file name (expected {', '.join(SUFFIXES)})")
    return normalize_name(filename[: -len(suffix)])


def decompress_module(data: bytes, suffix: str) -> bytes:
    """The plain ELF bytes of a module file with the given suffix."""
    codec = COMPRESSED_SUFFIXES.get(suffix)
    if codec is None:
        return data
    try:
        out, _ = CODECS[codec].decompress(data)
    except CompressionError as e:
        raise KmodError(f"cannot decompress {codec} data: {e.reason}") from None
    if len(out) > MAX_MODULE_SIZE:
        raise KmodError(f"decompresses to more than {MAX_MODULE_SIZE} bytes")
    return out


def _parse_softdep(value: str) -> SoftDeps:
    """'pre: a b post: c' -> SoftDeps(pre=('a', 'b'), post=('c',)); words before any label are ignored,
    as modprobe does."""
    pre: list[str] = []
    post: list[str] = []
    target: list[str] | None = None
    for word in value.split():
        if word == "pre:":
            target = pre
        elif word == "post:":
            target = post
        elif target is not None:
            target.append(word)
    return SoftDeps(tuple(pre), tuple(post))


def read_modinfo(elf: bytes) -> ModuleInfo:
    """Parse the .modinfo section of an (uncompressed) module."""
    try:
        section = ELFFile(io.BytesIO(elf)).get_section_by_name(".modinfo")
        raw = section.data() if section is not None else None
    except (ELFError, ValueError, OSError) as e:  # pyelftools raises plain errors on truncated files too
        raise KmodError(f"not an ELF kernel module: {e}") from None
    if raw is None:
        raise KmodError("no .modinfo section: not a kernel module")
    fields: list[tuple[str, str]] = []
    for item in raw.split(b"\0"):
        if not item:
            continue  # modpost aligns entries with NULs
        key, eq, value = item.decode("utf-8", "replace").partition("=")
        if eq:
            fields.append((key, value))
    values: dict[str, list[str]] = {}
    for key, value in fields:
        values.setdefault(key, []).append(value)
    depends = tuple(d for v in values.get("depends", []) for d in v.split(",") if d)
    pre: list[str] = []
    post: list[str] = []
    for value in values.get("softdep", []):
        parsed = _parse_softdep(value)
        pre.extend(parsed.pre)
        post.extend(parsed.post)
    return ModuleInfo(
        name=values.get("name", [""])[0],
        depends=depends,
        softdeps=SoftDeps(tuple(pre), tuple(post)),
        vermagic=values.get("vermagic", [""])[0],
        aliases=tuple(values.get("alias", [])),
        fields=tuple(fields),
    )


def read_module(data: bytes, filename: str) -> tuple[bytes, ModuleInfo]:
    """(plain ELF bytes, modinfo) of a module file's bytes; filename decides the decompression."""
    suffix = module_suffix(filename)
    if suffix is None:
        raise KmodError(f"{filename}: not a kernel module file name (expected {', '.join(SUFFIXES)})")
    plain = decompress_module(data, suffix)
    return plain, read_modinfo(plain)
