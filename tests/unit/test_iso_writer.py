"""The ISO writer below the boot tests: volume ids and ISO 9660 names, the FAT image (mkfs.fat and
mtools, at each FAT size class), pycdlib's fixed clock, a disc of small files read back by
independent tools (xorriso's El Torito and partition-table reports, libarchive), the same bytes in
any time zone and umask, the 4 GiB refusal, and what the chain ISO takes from iPXE."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import libarchive
import pycdlib.dates
import pycdlib.headervd
import pytest

from builder.errors import NetbuildError
from builder.formats.iso import is_iso, read_iso
from builder.writers.fatimage import FatFile, image_size, list_fat, make_fat_image
from builder.writers.iso import (
    EFI_IMAGE,
    EFI_LOADER,
    ISOLINUX_BIN,
    Disc,
    disc_file,
    find_isolinux,
    fixed_clock,
    iso9660_name,
    isolinux_cfg,
    volume_id,
    write_iso,
)
from builder.writers.isodisc import disc_for_chain, reads_autoexec

MIB = 1 << 20


@pytest.mark.parametrize(("name", "expected"), [
    ("nixos-system-netbuild-test", "NIXOS_SYSTEM_NETBUILD_TEST"),
    ("nixos-system-web-01-24.05.20240101.abcdef0", "NIXOS_SYSTEM_WEB_01_24_05_202401"),  # 32 kept
    ("hello (netbuild)", "HELLO__NETBUILD_"),
    ("", "NETBUILD"),
])
def test_volume_ids_are_at_most_32_d_characters(name: str, expected: str) -> None:
    assert volume_id(name) == expected and len(expected) <= 32


def test_iso9660_names_follow_rock_ridge_ones() -> None:
    assert iso9660_name("/bzImage") == "/BZIMAGE.;1"
    assert iso9660_name("/isolinux/ldlinux.c32") == "/ISOLINUX/LDLINUX.C32;1"
    assert iso9660_name("/manifest.json") == "/MANIFEST.JSON;1"
    assert iso9660_name("/isolinux", directory=True) == "/ISOLINUX"


def test_the_clock_pycdlib_sees_is_fixed_and_then_given_back() -> None:
    with fixed_clock(315532800):
        assert pycdlib.headervd.time.time() == 315532800.0
        assert pycdlib.dates.time.localtime(0).tm_gmtoff == 0  # UTC, whatever TZ says
    assert pycdlib.headervd.time is time and pycdlib.dates.time is time


@pytest.mark.parametrize("mib", [0.25, 31, 33, 130])  # FAT12, FAT16 around El Torito's 32 MiB, larger clusters
def test_the_fat_image_is_sized_from_its_files(mib: float, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    with open(payload, "wb") as f:
        f.truncate(int(mib * MIB) + 12345)  # sparse: mcopy reads zeros
    image = tmp_path / "efiboot.img"
    size = make_fat_image(image, [FatFile(EFI_LOADER, payload), FatFile("EFI/BOOT/autoexec.ipxe", b"#!ipxe\n")],
                          volume_id=0x4E425544, label="NETBUILD")
    assert image.stat().st_size == size == image_size(payload.stat().st_size + 7)
    assert list_fat(image, 0) == [(EFI_LOADER, payload.stat().st_size), ("EFI/BOOT/autoexec.ipxe", 7)]


def test_a_full_fat_image_is_an_error_not_a_short_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(b"x" * (3 * MIB))
    monkeypatch.setattr("builder.writers.fatimage.image_size", lambda _: 2 * MIB)
    with pytest.raises(NetbuildError, match=r"the UEFI boot image efiboot.img: mcopy failed: .*"):
        make_fat_image(tmp_path / "efiboot.img", [FatFile(EFI_LOADER, payload)], volume_id=1, label="X")


def _disc(efi: bool = True) -> Disc:
    cfg = isolinux_cfg(description="test", kernel="/bzImage", initrd="/initrd", append="console=ttyS0")
    files = (disc_file("/bzImage", b"a kernel" * 1000), disc_file("/initrd", b"an initrd" * 5000),
             disc_file("/isolinux/isolinux.cfg", cfg))
    return Disc("NETBUILD_TEST", find_isolinux(), files, (FatFile(EFI_LOADER, b"MZ" + bytes(70000)),) if efi else None)


def _write(dest: Path, disc: Disc, env: dict[str, str] | None = None, umask: int = 0o022) -> bytes:
    """write_iso in a process of its own, so that TZ and the umask really differ."""
    code = ("import os, sys, time; time.tzset(); os.umask(int(sys.argv[2], 8)); sys.path.insert(0, sys.argv[3]);"
            "from test_iso_writer import _disc; from builder.writers.iso import write_iso;"
            "from pathlib import Path; write_iso(Path(sys.argv[1]), _disc())")
    subprocess.run([sys.executable, "-c", code, str(dest), oct(umask)[2:], str(Path(__file__).parent)],
                   check=True, env={**os.environ, **(env or {})})
    return dest.read_bytes()


def test_the_same_disc_gives_the_same_bytes_in_any_time_zone_and_umask(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.iso", _disc(), {"TZ": "UTC"})
    assert _write(tmp_path / "b.iso", _disc(), {"TZ": "Pacific/Kiritimati"}, umask=0o077) == first
    assert (tmp_path / "b.iso").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.iso", "b.iso"]  # nothing left beside them


def test_independent_tools_read_the_disc(tmp_path: Path) -> None:
    iso = tmp_path / "test.iso"
    write_iso(iso, _disc())
    assert is_iso(iso)
    report = subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain", "-report_system_area",
                             "plain"], capture_output=True, text=True, check=True).stdout
    assert f"El Torito img path :   1  {ISOLINUX_BIN}" in report and f"El Torito img path :   2  {EFI_IMAGE}" in report
    assert "isohybrid" in report and "El Torito boot img :   2  UEFI  y   none" in report
    assert f"GPT partition path :   2  {EFI_IMAGE}" in report and f"MBR partition path :   2  {EFI_IMAGE}" in report
    assert "wrong" not in report and "problems" not in report  # checksums, backup GPT
    with libarchive.file_reader(str(iso)) as archive:
        listed = {entry.pathname.rstrip("/"): entry.size for entry in archive if entry.isfile}
    assert listed == {"bzImage": 8000, "initrd": 45000, "efiboot.img": image_size(70002), "isolinux/boot.cat": 2048,
                      "isolinux/isolinux.bin": find_isolinux().isolinux_bin.stat().st_size,
                      "isolinux/ldlinux.c32": find_isolinux().ldlinux_c32.stat().st_size,
                      "isolinux/isolinux.cfg": len(_disc().files[2].source)}
    listing = read_iso(iso)
    assert [(b.platform, b.file, b.sectors) for b in listing.boot] == [
        ("BIOS", ISOLINUX_BIN, 4), ("UEFI", EFI_IMAGE, image_size(70002) // 512)]


def test_a_bios_only_disc_has_one_entry_and_an_mbr(tmp_path: Path) -> None:
    listing = write_iso(tmp_path / "bios.iso", _disc(efi=False))
    assert [b.platform for b in listing.boot] == ["BIOS"] and listing.hybrid == "MBR"


def test_a_file_of_4_gib_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    big = tmp_path / "initrd"
    with open(big, "wb") as f:
        f.truncate(1 << 32)  # sparse
    disc = Disc("X", find_isolinux(), (disc_file("/initrd", big, "0" * 64),), None)
    with pytest.raises(NetbuildError, match=r"initrd is 4.0 GiB: an ISO 9660 file of 4 GiB or more needs several "
                                            r"extents, and neither ISOLINUX \(a 32-bit loader\) nor a unified kernel"):
        write_iso(tmp_path / "x.iso", disc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["initrd"]


def test_the_chain_disc_uses_ipxe_for_uefi_only_when_it_runs_autoexec(tmp_path: Path) -> None:
    lkrn, old, new = tmp_path / "ipxe.lkrn", tmp_path / "old.efi", tmp_path / "new.efi"
    lkrn.write_bytes(b"an iPXE for BIOS")
    old.write_bytes(b"MZ iPXE 2019")
    new.write_bytes(b"MZ iPXE 2025 file:autoexec.ipxe")
    assert not reads_autoexec(old) and reads_autoexec(new)
    warnings: list[str] = []
    disc = disc_for_chain("http://10.0.0.1/x.ipxe", ipxe_lkrn=lkrn, ipxe_efi=new, label=None, warn=warnings.append)
    assert disc.efi is not None and [f.path for f in disc.efi] == [EFI_LOADER, "EFI/BOOT/autoexec.ipxe"]
    script = disc.efi[1].source
    assert isinstance(script, bytes) and b"\ndhcp && chain http://10.0.0.1/x.ipxe || goto retry\n" in script
    assert [f.path for f in disc.files] == ["/ipxe.lkrn", "/chain.ipxe", "/isolinux/isolinux.cfg"]
    assert disc.files[1].source == script and disc.volume_id == "NETBUILD_CHAIN" and warnings == []
    with pytest.raises(NetbuildError, match=r"--ipxe-efi .*old\.efi: this iPXE does not run autoexec\.ipxe"):
        disc_for_chain("http://10.0.0.1/x.ipxe", ipxe_lkrn=lkrn, ipxe_efi=old, label=None, warn=warnings.append)
    for bad in ("10.0.0.1/x.ipxe", "ftp://h/x", "http:///x", "http://h/a b"):
        with pytest.raises(NetbuildError, match=r"expected an http://, https:// or tftp:// URL"):
            disc_for_chain(bad, ipxe_lkrn=lkrn, ipxe_efi=new, label=None, warn=warnings.append)


def test_inspect_lists_the_catalog_the_fat_files_and_the_files(tmp_path: Path) -> None:
    iso = tmp_path / "test.iso"
    write_iso(iso, _disc())
    proc = subprocess.run([sys.executable, "-m", "builder", "inspect", str(iso)], capture_output=True, text=True,
                          check=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"{iso}: an ISO 9660 image, {iso.stat().st_size} bytes, volume 'NETBUILD_TEST', hybrid "
                        "(MBR+GPT: boots from a USB stick too)")
    assert any(line.split()[1:4] == ["BIOS", "no", "emulation"] and line.endswith(ISOLINUX_BIN) for line in lines)
    assert any(line.split()[-2:] == ["70002", EFI_LOADER] for line in lines)
    assert any(line.split()[:1] == ["8000"] and line.endswith("/bzImage") for line in lines)
