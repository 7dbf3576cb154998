"""builder.formats.kmod on Debian's real modules, checked against kmod's own `modinfo`, plain and
compressed with the real xz, zstd and gzip tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.kmods import modinfo, module_file, plain_bytes
from support.qemu import find_kernel, kernel_release

from builder.formats.kmod import (
    KmodError,
    module_name_from_filename,
    module_suffix,
    read_modinfo,
    read_module,
)

pytestmark = pytest.mark.kernel  # Debian's kernel, its modules and kmod's tools

MODULES = ["loop", "squashfs", "overlay", "libata", "ata_generic", "lrw", "vfio", "btrfs", "xt_LOG"]


@pytest.fixture(scope="module")
def release() -> str:
    return kernel_release(find_kernel())


@pytest.mark.parametrize("module", MODULES)
def test_fields_match_kmods_modinfo(release: str, module: str) -> None:
    path = module_file(release, module)
    elf, info = read_module(path.read_bytes(), path.name)
    assert elf == plain_bytes(path)
    assert info.name == modinfo(release, module, "name")[0] == module
    assert ",".join(info.depends) == (modinfo(release, module, "depends") or [""])[0]
    assert [info.vermagic.strip()] == [line.strip() for line in modinfo(release, module, "vermagic")]
    assert info.vermagic_release == release
    assert list(info.aliases) == modinfo(release, module, "alias")
    softdeps = modinfo(release, module, "softdep")
    pre = [w for line in softdeps for w in line.split("post:")[0].replace("pre:", "").split()]
    post = [w for line in softdeps if "post:" in line for w in line.split("post:")[1].split()]
    assert (list(info.softdeps.pre), list(info.softdeps.post)) == (pre, post)


def test_several_softdep_lines_all_count(release: str) -> None:
    """btrfs declares its pre-softdeps on four lines (on 6.1 and 6.12 alike); every one counts. Its
    hard dependencies differ between kernels: kmod's modinfo is the reference for those."""
    path = module_file(release, "btrfs")
    _, info = read_module(path.read_bytes(), path.name)
    assert modinfo(release, "btrfs", "softdep") == [
        "pre: blake2b-256", "pre: sha256", "pre: xxhash64", "pre: crypto-crc32c"]
    assert info.softdeps.pre == ("blake2b-256", "sha256", "xxhash64", "crypto-crc32c")
    assert info.depends == tuple(modinfo(release, "btrfs", "depends")[0].split(","))


@pytest.mark.parametrize(
    ("suffix", "command"),
    [(".ko.xz", ["xz", "--check=crc32", "-c"]), (".ko.zst", ["zstd", "-q", "-c"]), (".ko.gz", ["gzip", "-n", "-c"])],
)
def test_compressed_module_reads_like_the_plain_one(release: str, suffix: str, command: list[str]) -> None:
    path = module_file(release, "squashfs")
    plain = plain_bytes(path)
    packed = subprocess.run(command, input=plain, capture_output=True, check=True).stdout
    assert packed != plain
    elf, info = read_module(packed, "squashfs" + suffix)
    assert elf == plain
    assert info == read_modinfo(plain)
    with pytest.raises(KmodError, match="cannot decompress"):
        read_module(packed[: len(packed) // 2], "squashfs" + suffix)


def test_not_a_module(tmp_path: Path) -> None:
    busybox = Path("/bin/busybox").read_bytes()  # an ELF file, but no .modinfo
    with pytest.raises(KmodError, match=r"no \.modinfo section"):
        read_modinfo(busybox)
    with pytest.raises(KmodError, match="not an ELF kernel module"):
        read_modinfo(b"#!/bin/sh\necho not elf\n" * 10)
    with pytest.raises(KmodError, match="not a kernel module file name"):
        read_module(busybox, "busybox")


@pytest.mark.parametrize(
    ("filename", "name", "suffix"),
    [
        ("loop.ko", "loop", ".ko"),
        ("crc32c-intel.ko.zst", "crc32c_intel", ".ko.zst"),
        ("nf_log_syslog.ko.xz", "nf_log_syslog", ".ko.xz"),
        ("a-b.ko.gz", "a_b", ".ko.gz"),
    ],
)
def test_names_from_file_names(filename: str, name: str, suffix: str) -> None:
    assert module_name_from_filename(filename) == name
    assert module_suffix(filename) == suffix


@pytest.mark.parametrize("filename", ["loop.ko.bz2", "modules.dep", ".ko", "kernel"])
def test_other_file_names_are_not_modules(filename: str) -> None:
    assert module_suffix(filename) is None
