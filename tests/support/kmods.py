"""The host's real kernel modules, as kmod sees them: where a module's file is, and its plain ELF
bytes whatever it is compressed with (Debian 12 ships `.ko`, Debian 13 `.ko.xz`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

# The real tool that unpacks each compressed module suffix.
UNPACK = {".xz": ["xz", "-dc"], ".zst": ["zstd", "-dcq"], ".gz": ["gzip", "-dc"]}


def modinfo(release: str, module: str, field: str) -> list[str]:
    """kmod's answer: one line per value of the field."""
    out = subprocess.run(["modinfo", "-k", release, "-F", field, module], capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def module_file(release: str, module: str) -> Path:
    (path,) = modinfo(release, module, "filename")
    return Path(path)


def compression_suffix(path: str | Path) -> str:
    """'' for a plain `.ko`, else the compressor's suffix ('.xz', '.zst', '.gz')."""
    suffix = Path(path).suffix
    return suffix if suffix in UNPACK else ""


def plain_relpath(relpath: str) -> str:
    """kernel/…/loop.ko.xz -> kernel/…/loop.ko"""
    return relpath.removesuffix(compression_suffix(relpath))


def plain_bytes(path: Path) -> bytes:
    """The module's ELF bytes, unpacked by the real tool when the file is compressed."""
    suffix = compression_suffix(path)
    if not suffix:
        return path.read_bytes()
    return subprocess.run([*UNPACK[suffix], str(path)], capture_output=True, check=True).stdout


def installed_file(modules_dir: Path, plain: str) -> Path:
    """The file a modules tree holds for a plain relative path, compressed or not."""
    candidates = [modules_dir / (plain + suffix) for suffix in ("", *UNPACK)]
    found = [path for path in candidates if path.is_file()]
    assert len(found) == 1, f"{modules_dir}: expected one of {[c.name for c in candidates]}, found {found}"
    return found[0]
