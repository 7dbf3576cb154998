"""`netbuild inspect` reads any Linux initrd, and agrees with GNU cpio and libarchive (bsdtar).

Every archive here is made by the real tools (GNU cpio, then gzip/zstd/xz/lzma/bzip2/lz4/lzop) or
is Debian's own /boot/initrd.img-*. For each member netbuild finds, its bytes (at the offset and
size netbuild reports) are handed to the codec's own decompressor and to `cpio -itv` and
`bsdtar -tvf`: the entries — names, modes, sizes, link targets — must be the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import RunNetbuild

# codec → (compress command reading stdin, decompress command reading stdin)
CODECS: dict[str, tuple[list[str], list[str]]] = {
    "gzip": (["gzip", "-n", "-9"], ["gzip", "-dc"]),
    "zstd": (["zstd", "-q", "-19"], ["zstd", "-dcq"]),
    "xz": (["xz", "--check=crc32", "-6"], ["xz", "-dc"]),
    "lzma": (["lzma", "-6"], ["lzma", "-dc"]),
    "bzip2": (["bzip2", "-9"], ["bzip2", "-dc"]),
    "lz4": (["lz4", "-l", "-q", "-9"], ["lz4", "-dc", "-q"]),
    "lzo": (["lzop", "-c", "-9"], ["lzop", "-dc"]),
}
_CPIO_LINE = re.compile(r"^(\S{10})\s+\d+\s+\S+\s+\S+\s+(\d+|\d+,\s*\d+)\s+\w{3}\s+\d+\s+[\d:]+\s+(.*)$")


def run(cmd: list[str], data: bytes | None = None, cwd: Path | None = None) -> bytes:
    proc = subprocess.run(cmd, input=data, capture_output=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small root with one of each kind of entry, including a device node and a 1.9 MiB binary."""
    root = tmp_path_factory.mktemp("tree") / "root"
    (root / "bin").mkdir(parents=True)
    (root / "etc" / "empty dir").mkdir(parents=True)
    (root / "dev").mkdir()
    run(["cp", "/bin/busybox", str(root / "bin" / "busybox")])
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc" / "motd with space").write_text("hello\n")
    (root / "etc" / "odd").write_bytes(b"123456789")
    os.mknod(root / "dev" / "console", 0o600 | 0o020000, os.makedev(5, 1))
    return root


def gnu_cpio(root: Path, fmt: str = "newc") -> bytes:
    names = run(["find", "."], cwd=root)
    return run(["cpio", "-o", "-H", fmt, "--quiet"], names, cwd=root)


def cpio_listing(archive: bytes) -> list[tuple[str, str, str]]:
    """(mode string, size, name[ -> target]) as GNU cpio lists them."""
    rows = []
    for line in run(["cpio", "-itv", "--quiet"], archive).decode().splitlines():
        match = _CPIO_LINE.match(line)
        assert match, line
        size = "" if "," in match[2] else match[2]  # a device's "major, minor"
        rows.append((match[1], size, match[3]))
    return rows


def bsdtar_names(member: Path) -> list[str]:
    return run(["bsdtar", "-tf", str(member)]).decode().splitlines()


def inspected(run_netbuild: RunNetbuild, initrd: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(run_netbuild("inspect", "--json", str(initrd)).stdout)


def our_rows(doc: dict, member: int) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    import stat

    rows = []
    for e in doc["entries"]:
        if e["member"] != member:
            continue
        mode = int(e["mode"], 8)
        size = "" if e["type"] in ("char", "block") else str(e["size"])
        name = e["name"] + (f" -> {e['target']}" if "target" in e else "")
        rows.append((stat.filemode(mode), size, name))
    return rows


def assert_members_agree(doc: dict, initrd: Path, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """Each member netbuild reports, cut out at its offset and size, decompressed by its own tool,
    lists the same entries with GNU cpio; bsdtar, given the raw member, the same names."""
    data = initrd.read_bytes()
    for m in doc["members"]:
        raw = data[m["offset"] : m["offset"] + m["size"]]
        plain = raw if m["compression"] == "none" else run(CODECS[m["compression"]][1], raw)
        assert len(plain) == m["uncompressedSize"], m
        assert cpio_listing(plain) == our_rows(doc, m["index"]), m
        piece = tmp_path / f"member-{m['index']}"
        piece.write_bytes(raw)
        assert bsdtar_names(piece) == [r[2].split(" -> ")[0] for r in our_rows(doc, m["index"])], m


@pytest.mark.parametrize("codec", ["none", *CODECS])
def test_gnu_cpio_archive_with_every_kernel_codec(codec: str, tree: Path, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plain = gnu_cpio(tree)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(plain if codec == "none" else run(CODECS[codec][0], plain))
    doc = inspected(run_netbuild, initrd)
    assert [m["compression"] for m in doc["members"]] == [codec]
    assert doc["members"][0]["size"] == initrd.stat().st_size - doc["padding"]
    assert len(doc["entries"]) == 10 and doc["members"][0]["entries"] == 10
    assert_members_agree(doc, initrd, tmp_path)
    assert bsdtar_names(initrd) == [e["name"] for e in doc["entries"]]  # bsdtar reads the whole file too


def test_debian_style_early_microcode_then_main_archive(tree: Path, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """As Debian's initramfs-tools writes it: an uncompressed early archive (GNU cpio pads it to 512
    bytes), then the compressed main archive; here also the "crc" cpio variant and a third member."""
    early = tmp_path / "early"
    (early / "kernel" / "x86" / "microcode").mkdir(parents=True)
    (early / "kernel" / "x86" / "microcode" / "GenuineIntel.bin").write_bytes(os.urandom(3001))
    first = gnu_cpio(early)
    assert len(first) % 512 == 0
    second = run(CODECS["zstd"][0], gnu_cpio(tree))
    third = run(CODECS["gzip"][0], gnu_cpio(tree, "crc"))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(first + second + b"\0" * 4 + third)
    doc = inspected(run_netbuild, initrd)
    assert [(m["offset"], m["compression"]) for m in doc["members"]] == [
        (0, "none"), (len(first), "zstd"), (len(first) + len(second) + 4, "gzip")]
    assert doc["members"][0]["entries"] == 5  # ., kernel, kernel/x86, kernel/x86/microcode, the .bin
    assert_members_agree(doc, initrd, tmp_path)


def test_debians_own_initrd(run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    initrds = sorted(Path("/boot").glob("initrd.img-*"))
    assert initrds, "Debian's kernel package makes /boot/initrd.img-<release>"
    doc = inspected(run_netbuild, initrds[-1])
    assert doc["members"] and len(doc["entries"]) > 100
    assert any(e["name"] in ("init", "./init") for e in doc["entries"])
    assert_members_agree(doc, initrds[-1], tmp_path)
    assert bsdtar_names(initrds[-1]) == [e["name"] for e in doc["entries"] if e["member"] == 0]


@pytest.mark.nix
def test_netbuilds_own_initrd_and_human_listing(built_out: Path, run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doc = inspected(run_netbuild, built_out / "initrd")
    manifest = json.loads((built_out / "manifest.json").read_text())
    recorded = manifest["initrd"]["members"]
    assert [(m["offset"], m["size"], m["compression"], m["entries"], m["uncompressedSize"]) for m in doc["members"]] \
        == [(m["offset"], m["size"], m["compression"], m["entries"], m["uncompressedSize"]) for m in recorded]
    assert_members_agree(doc, built_out / "initrd", tmp_path)
    text = run_netbuild("inspect", str(built_out)).stdout.decode()
    assert text.startswith(f"{built_out / 'initrd'}: {(built_out / 'initrd').stat().st_size} bytes, ")
    assert "crw-------          0  dev/console\n" in text
    assert "nix/store/nix-path-registration\n" in text


def test_what_is_not_an_initrd_is_one_error_line(run_netbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 8 + b"PK\x03\x04 a zip file")
    proc = run_netbuild("inspect", str(junk), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (f"error: {junk}: offset 8: neither a cpio archive nor a compressed stream the "
                                    "kernel knows (starts with 50 4b 03 04 20 61 20 7a)\n")
    truncated = tmp_path / "truncated"
    truncated.write_bytes(run(CODECS["xz"][0], b"070701" + b"0" * 200)[:-20])
    proc = run_netbuild("inspect", str(truncated), check=False)
    assert proc.returncode == 1 and proc.stderr.decode().startswith(f"error: {truncated}: member 0 at offset 0 (xz)")
