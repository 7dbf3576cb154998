"""Re-read what was written before it is published: a build that cannot be read back never reaches OUT.

The same code checks an existing OUT (`netbuild check OUT`): every artifact against manifest.json
and SHA256SUMS, the bzImage header, and every initrd member decompressed and parsed record by
record (alignment, NUL-terminated names, padding, trailer), with the store paths found compared
with the closure the manifest records.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.closure import REGISTRATION_FILE, STORE_DIR
from builder.errors import NetbuildError
from builder.formats.compress import NONE
from builder.formats.cpio import CpioError
from builder.formats.initrd import Member, open_member
from builder.formats.kernel import KernelImageError, read_kernel_header
from builder.formats.streams import CompressionError
from builder.outcontract import (
    BZIMAGE,
    INITRD,
    KERNEL_PARAMS,
    MANIFEST,
    NESTED,
    NETBOOT_EFI,
    SHA256SUMS,
    Digest,
    file_digest,
    kernel_in,
    open_regular,
    read_manifest,
    read_regular,
    read_sums,
)
from builder.writers.uki import check_uki_in

_STORE_PREFIX = STORE_DIR.lstrip("/") + "/"


@dataclass
class InitrdContents:
    """What the self-check read: records (trailers not counted) and the store paths they hold."""

    entries: int = 0
    store_paths: set[str] = field(default_factory=set)


def check_initrd(
    path: Path, members: Sequence[Member], *, expect_store_paths: Collection[str] | None = None
) -> InitrdContents:
    """Stream every member back through a fresh decompressor and cpio parser, in bounded memory.

    With expect_store_paths (layouts that put the store in the archive as files), the top-level
    store-path directories found must be exactly those.
    """
    contents = InitrdContents()
    with open_regular(path) as f:
        file_size = f.seek(0, 2)
        expected_offset = 0
        for index, member in enumerate(members):
            where = f"self-check: {path.name}: member {index} ({member.role}) at {member.offset}"
            if member.offset + member.size > file_size:  # before any read: a hostile manifest may say 2**63
                raise NetbuildError(f"{where}: {member.size} bytes from there pass the end of the file ({file_size})")
            if member.offset < expected_offset:
                raise NetbuildError(f"{where}: overlaps the member before, which ends at {expected_offset}")
            if member.offset > expected_offset:
                # NUL padding between members is allowed (the kernel skips it), and nothing else.
                f.seek(expected_offset)
                gap = f.read(member.offset - expected_offset)
                if gap.strip(b"\0") or len(gap) != member.offset - expected_offset:
                    raise NetbuildError(f"{where}: bytes other than NUL padding from {expected_offset}")
            if member.compression == "none" and member.offset % 4:
                raise NetbuildError(f"{where}: an uncompressed archive must start at a multiple of 4")
            expected_offset = member.offset + member.size
            try:
                _check_member(f, member, where, contents)
            except (CompressionError, CpioError) as e:
                raise NetbuildError(f"{where}: {e}") from None
        if expected_offset != file_size:
            raise NetbuildError(f"self-check: {path.name}: {file_size - expected_offset} bytes after the last member")
    if expect_store_paths is not None:
        _compare_store_paths(path, contents.store_paths, set(expect_store_paths))
    return contents


def _check_member(f: BinaryIO, member: Member, where: str, contents: InitrdContents) -> None:
    """The member where the manifest says, filling exactly the bytes it says (it must not read into
    the next one), decompressed and parsed."""
    plain = member.compression == NONE.name
    found = open_member(f, member.offset, size=member.size, codec=NONE if plain else None, digests=True)
    if not plain and found.kind != member.compression:
        raise NetbuildError(f"{where}: starts like {found.kind or 'nothing known'}, not {member.compression}")
    count = 0
    for entry in found.entries():
        count += 1
        base = entry.name[len(_STORE_PREFIX) :] if entry.name.startswith(_STORE_PREFIX) else ""
        if base and "/" not in base and base != REGISTRATION_FILE:
            contents.store_paths.add("/" + entry.name)
    # NUL padding may follow the trailer (a stage 1 copied from a toplevel has it, and the kernel
    # skips it); anything else would be a second archive the writer did not mean to put there.
    if not found.rest_is_padding():
        raise NetbuildError(f"{where}: data after the archive's trailer")
    if found.bytes_after_stream():
        raise NetbuildError(f"{where}: unexpected bytes after the compressed stream")
    if count != member.entries:
        raise NetbuildError(f"{where}: {count} entries read back, {member.entries} written")
    if found.plain_size != member.plain_size or found.plain_sha256 != member.plain_sha256:
        raise NetbuildError(f"{where}: the archive read back differs from the one written")
    if member.sha256 is not None and found.sha256 != member.sha256:
        raise NetbuildError(f"{where}: its bytes differ from those written (sha256)")
    contents.entries += count


def _compare_store_paths(path: Path, found: set[str], expected: set[str]) -> None:
    missing = sorted(expected - found)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NetbuildError(f"self-check: {path.name}: store path {missing[0]}{more} is in the closure but not in "
                            "the initrd")
    extra = sorted(found - expected)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise NetbuildError(f"self-check: {path.name}: {extra[0]}{more} is in the initrd but not in the closure")


def check_kernel(path: Path) -> None:
    try:
        read_kernel_header(path)
    except KernelImageError as e:
        raise NetbuildError(f"self-check: {e}") from None


# --- `netbuild check OUT` ----------------------------------------------------------------------


@dataclass(frozen=True)
class OutReport:
    artifacts: int  # files checked against manifest.json and SHA256SUMS
    members: int
    entries: int
    store_paths: int  # found in the initrd (0 for layouts that do not ship the store as files)


def check_out(out: Path) -> OutReport:
    """Everything netbuild's self-check proves about a fresh build, on an existing OUT."""
    manifest = read_manifest(out)
    artifacts = manifest.artifacts
    for name, expected in sorted(artifacts.items()):
        _check_artifact(out, name, expected)
    _check_sums(out, artifacts)
    kernel = kernel_in(artifacts)
    if kernel is not None:
        check_kernel(out / kernel)
    if NETBOOT_EFI in artifacts:  # built with --uki: the image holds this OUT's kernel, initrd, command line
        check_uki_in(out, out / (kernel or BZIMAGE), out / INITRD, _text(out / KERNEL_PARAMS))
    members = manifest.members
    expected_paths = None
    if manifest.layout == "initramfs":  # the store as files in the archive: every path must be there
        expected_paths = [path for path, _ in manifest.store_paths]
    contents = check_initrd(out / INITRD, members, expect_store_paths=expected_paths)
    return OutReport(len(artifacts) + 1, len(members), contents.entries, len(contents.store_paths))


def _text(path: Path) -> str:
    try:
        return read_regular(path, 1 << 20).decode("utf-8", errors="replace").strip()
    except OSError as e:
        raise NetbuildError(f"{path}: cannot read: {e.strerror}") from None


def _file_digest(path: Path) -> Digest:
    try:
        return file_digest(path)
    except FileNotFoundError:
        raise NetbuildError(f"{path}: missing (listed in {MANIFEST})") from None
    except OSError as e:
        raise NetbuildError(f"{path}: cannot read: {e.strerror}") from None


def _check_artifact(out: Path, name: str, expected: Digest) -> None:
    if ("/" in name and name not in NESTED) or name in ("", ".", ".."):
        raise NetbuildError(f"{out / MANIFEST}: artifact name {name!r} is not a file name")
    if "/" in name and os.path.islink(out / name.split("/")[0]):
        raise NetbuildError(f"{out / name.split('/')[0]}: a symlink, not OUT's own directory; only OUT's own files "
                            "are read")
    size, digest = _file_digest(out / name)
    if size != expected[0]:
        raise NetbuildError(f"{out / name}: {size} bytes, but {MANIFEST} says {expected[0]}")
    if digest != expected[1]:
        raise NetbuildError(f"{out / name}: sha256 {digest}, but {MANIFEST} says {expected[1]}")


def _check_sums(out: Path, artifacts: dict[str, Digest]) -> None:
    path = out / SHA256SUMS
    listed = read_sums(out)
    expected_names = set(artifacts) | {MANIFEST}
    if set(listed) != expected_names:
        odd = sorted(set(listed) ^ expected_names)
        raise NetbuildError(f"{path}: lists other files than {MANIFEST} and its artifacts ({', '.join(odd)})")
    for name, digest in sorted(listed.items()):
        if name in artifacts:
            if digest != artifacts[name][1]:
                raise NetbuildError(f"{path}: {name}'s sha256 differs from {MANIFEST}'s")
        elif _file_digest(out / name)[1] != digest:
            raise NetbuildError(f"{out / name}: sha256 differs from {SHA256SUMS}")
