"""netbuild iso: one ISO image that boots the fixture from a CD and from a USB stick, under SeaBIOS
(ISOLINUX) and under OVMF (a unified kernel image on the El Torito EFI entry's FAT image), with the
guest's store digest equal to the host's; read by independent tools (xorriso's El Torito and
partition reports, libarchive, mtools, objcopy); the same bytes on every run; what it refuses; how
`check` and `inspect` see it; and the chain ISO, whose iPXE fetches netboot.ipxe from
`netbuild serve` and boots the fixture (under UEFI only with an iPXE that runs autoexec.ipxe)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import libarchive
import pytest
from conftest import RunNetbuild, SystemClosure
from support.netboot import MARKER, assert_guest_store, netbuild_boot, netbuild_serve

from builder.firmware import IPXE_EFI_CANDIDATES
from builder.writers.isodisc import reads_autoexec

pytestmark = pytest.mark.nix

REPO = Path(__file__).resolve().parents[2]

HOST_IPXE_EFI = next((p for p in IPXE_EFI_CANDIDATES if p.is_file()), None)
NEW_IPXE = HOST_IPXE_EFI is not None and reads_autoexec(HOST_IPXE_EFI)  # Debian 13's; Debian 12's is from 2019


@pytest.fixture(scope="module")
def disc(built_out: Path, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's OUT (no netboot.efi: `netbuild iso` makes the UKI) on a disc."""
    iso = tmp_path_factory.mktemp("iso") / "system.iso"
    proc = run_netbuild("iso", str(built_out), "-o", str(iso))
    assert proc.stdout.decode().splitlines()[0] == (f"{iso}: {iso.stat().st_size:,} bytes, volume "
                                                    "NIXOS_SYSTEM_NETBUILD_TEST, MBR+GPT (a CD or a USB stick)")
    return iso


def _members(iso: Path) -> dict[str, bytes]:
    """Every file on the disc, as libarchive reads it."""
    with libarchive.file_reader(str(iso)) as archive:
        return {entry.pathname: b"".join(entry.get_blocks()) for entry in archive if entry.isfile}


def test_two_runs_give_the_same_bytes(disc: Path, built_out: Path, run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    again = tmp_path / "again.iso"
    env = {**os.environ, "TZ": "Asia/Kathmandu", "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(REPO)}
    subprocess.run(["sh", "-c", 'umask 077 && exec "$@"', "sh", sys.executable, "-m", "builder", "iso",
                    str(built_out.resolve()), "-o", "again.iso", "-q"], cwd=tmp_path, env=env, check=True)
    assert again.read_bytes() == disc.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.iso"]  # nothing left beside it


def test_xorriso_reports_both_el_torito_entries_and_the_usb_partitions(disc: Path) -> None:
    report = subprocess.run(["xorriso", "-indev", str(disc), "-report_el_torito", "plain", "-report_system_area",
                             "plain"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True).stdout
    images = [line.split() for line in report.splitlines() if line.startswith("El Torito boot img :")]
    assert [(i[6], i[7], i[8]) for i in images] == [("BIOS", "y", "none"), ("UEFI", "y", "none")]
    assert "El Torito img path :   1  /isolinux/isolinux.bin" in report
    assert "El Torito img path :   2  /efiboot.img" in report and "boot-info-table isohybrid-suitable" in report
    assert "Boot record  : El Torito , MBR isohybrid cyl-align-on GPT" in report
    assert "MBR partition path :   2  /efiboot.img" in report and "GPT partition path :   2  /efiboot.img" in report
    assert "wrong" not in report and "problems" not in report  # checksums, the backup GPT


def test_the_files_are_outs_and_isolinux_boots_them(disc: Path, built_out: Path) -> None:
    files = _members(disc)
    assert sorted(files) == ["bzImage", "efiboot.img", "initrd", "isolinux/boot.cat", "isolinux/isolinux.bin",
                             "isolinux/isolinux.cfg", "isolinux/ldlinux.c32", "manifest.json"]
    for name in ("bzImage", "initrd", "manifest.json"):
        assert files[name] == (built_out / name).read_bytes(), name
    assert files["isolinux/ldlinux.c32"] == Path("/usr/lib/syslinux/modules/bios/ldlinux.c32").read_bytes()
    cfg = files["isolinux/isolinux.cfg"].decode().splitlines()
    params = (built_out / "kernel-params").read_text().strip()
    assert cfg[1:] == ["SERIAL 0 115200", "DEFAULT netbuild", "PROMPT 0", "TIMEOUT 0", "LABEL netbuild",
                       "  LINUX /bzImage", "  INITRD /initrd", f"  APPEND {params}"]


def _loader(efiboot: bytes, tmp: Path) -> Path:
    """EFI/BOOT/BOOTX64.EFI out of the FAT image, by mtools."""
    (tmp / "efiboot.img").write_bytes(efiboot)
    subprocess.run(["mcopy", "-n", "-i", str(tmp / "efiboot.img"), "::/EFI/BOOT/BOOTX64.EFI", str(tmp / "loader")],
                   check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return tmp / "loader"


def _section(efi: Path, name: str, tmp: Path) -> bytes:
    out = tmp / f"section{name}"
    subprocess.run(["objcopy", "-O", "binary", f"--only-section={name}", str(efi), str(out)], check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def uki_out(system_closure: SystemClosure, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uki") / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out), "--uki")
    return out


def test_the_uefi_image_holds_a_unified_kernel_image_of_out(
    disc: Path, built_out: Path, uki_out: Path, tmp_path: Path
) -> None:
    loader = _loader(_members(disc)["efiboot.img"], tmp_path)
    assert _section(loader, ".initrd", tmp_path) == (built_out / "initrd").read_bytes()
    kernel = (built_out / "bzImage").read_bytes()
    assert _section(loader, ".linux", tmp_path)[: len(kernel)] == kernel
    assert _section(loader, ".cmdline", tmp_path) == (built_out / "kernel-params").read_text().strip().encode()
    # builder.writers.uki made it, from the same stub and parts as the build's --uki: the same bytes.
    assert loader.read_bytes() == (uki_out / "netboot.efi").read_bytes()


def test_an_out_with_netboot_efi_gives_the_disc_that_very_image(
    uki_out: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    netboot_efi = (uki_out / "netboot.efi").read_bytes()
    signed = tmp_path / "out"  # as a signed image would be: other bytes, which the disc must keep
    shutil.copytree(uki_out, signed)
    manifest = json.loads((signed / "manifest.json").read_text())
    (signed / "netboot.efi").write_bytes(netboot_efi + bytes(512))
    manifest["artifacts"]["netboot.efi"] = {"size": len(netboot_efi) + 512,
                                            "sha256": hashlib.sha256(netboot_efi + bytes(512)).hexdigest()}
    (signed / "manifest.json").write_text(json.dumps(manifest))
    proc = run_netbuild("iso", str(signed), "-o", str(tmp_path / "uki.iso"))
    assert f"UEFI: {signed}'s netboot.efi as EFI/BOOT/BOOTX64.EFI" in proc.stdout.decode()
    work = tmp_path / "work"
    work.mkdir()
    assert _loader(_members(tmp_path / "uki.iso")["efiboot.img"], work).read_bytes() == netboot_efi + bytes(512)
    stub = tmp_path / "stub.efi"
    stub.write_bytes(b"MZ")
    proc = run_netbuild("iso", str(signed), "-o", str(tmp_path / "x.iso"), "--efi-stub", str(stub), check=False)
    assert (proc.returncode, proc.stderr.decode()) == (
        1, f"error: --efi-stub: {signed} has netboot.efi, which the disc boots as it is\n")


# --- real firmware ------------------------------------------------------------------------------

@pytest.mark.boot
@pytest.mark.parametrize(("via", "uefi"), [("cdrom", False), ("cdrom", True), ("usb", False), ("usb", True)],
                         ids=["cd-seabios", "cd-ovmf", "usb-seabios", "usb-ovmf"])
def test_the_disc_boots_the_fixture(via: str, uefi: bool, disc: Path, built_out: Path,
                                    system_closure: SystemClosure) -> None:
    run = netbuild_boot(disc, "--via", via, *(["--uefi"] if uefi else []), "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    assert_guest_store(run.console, system_closure.paths, (built_out / "registration").read_bytes())
    if uefi:  # OVMF's boot manager names the device, the stub hands the kernel its initrd
        assert ("UEFI QEMU DVD-ROM" if via == "cdrom" else "UEFI QEMU QEMU USB HARDDRIVE") in run.console
        assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" in run.console
        assert "ISOLINUX" not in run.console
    else:  # SeaBIOS: El Torito from the CD, the isohybrid MBR from the stick; then ISOLINUX loads both files
        assert ("Booting from DVD/CD..." if via == "cdrom" else "Booting from Hard Disk...") in run.console
        assert "ISOLINUX 6.04" in run.console and "Loading /initrd" in run.console
        assert "EFI stub" not in run.console


SNAKEOIL_KEY = Path("/usr/share/ovmf/PkKek-1-snakeoil.key")  # Debian's OVMF test key, passphrase "snakeoil"
SNAKEOIL_CERT = Path("/usr/share/ovmf/PkKek-1-snakeoil.pem")


@pytest.mark.boot
def test_a_disc_of_a_signed_out_boots_under_secure_boot(
    system_closure: SystemClosure, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out), "--uki", "--sign-key", str(SNAKEOIL_KEY),
                 "--sign-cert", str(SNAKEOIL_CERT), "--sign-passphrase-env", "SNAKEOIL",
                 env={**os.environ, "SNAKEOIL": "snakeoil"})
    run_netbuild("iso", str(out), "-o", str(tmp_path / "signed.iso"))
    run = netbuild_boot(tmp_path / "signed.iso", "--uefi", "--secure-boot", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    assert "UEFI QEMU DVD-ROM" in run.console and "EFI stub: UEFI Secure Boot is enabled." in run.console
    assert_guest_store(run.console, system_closure.paths, (out / "registration").read_bytes())


# --- check, inspect, refusals -----------------------------------------------------------------------

def test_check_proves_the_disc_boots_out_and_finds_a_changed_one(
    disc: Path, built_out: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    proc = run_netbuild("check", str(built_out), "--iso", str(disc))
    assert proc.stdout.decode().splitlines()[1] == (
        f"{disc}: ok: boots {built_out}'s kernel, initrd and command line from a CD or a USB stick, BIOS (ISOLINUX) "
        "and UEFI (a unified kernel image); volume NIXOS_SYSTEM_NETBUILD_TEST")
    out = tmp_path / "out"
    shutil.copytree(built_out, out)
    data = bytearray(disc.read_bytes())
    listing = json.loads(run_netbuild("inspect", str(disc), "--json").stdout)
    initrd = next(f for f in listing["files"] if f["path"] == "/initrd")
    data[initrd["offset"] + initrd["size"] // 2] ^= 0x01
    (out / "changed.iso").write_bytes(bytes(data))  # inside OUT: checked without --iso
    proc = run_netbuild("check", str(out), check=False)
    assert proc.returncode == 1 and proc.stderr.decode() == f"error: {out / 'changed.iso'}: /initrd is not {out}'s\n"
    efiboot = next(b for b in listing["boot"] if b["platform"] == "UEFI")
    assert [f["path"] for f in efiboot["fatFiles"]] == ["EFI/BOOT/BOOTX64.EFI"]


def test_a_file_of_4_gib_is_refused_before_anything_is_written(
    built_out: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built_out, out)
    os.truncate(out / "initrd", 1 << 32)  # sparse
    proc = run_netbuild("iso", str(out), "-o", str(tmp_path / "big.iso"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"error: {out / 'initrd'} is 4.0 GiB: an ISO 9660 file of 4 GiB or more needs several extents, and neither "
        "ISOLINUX (a 32-bit loader) nor a unified kernel image (PE32+) can load that much; use the squashfs layout "
        "or boot it over the network\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_out_that_changed_since_its_manifest_leaves_the_old_disc(
    built_out: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built_out, out)
    old = tmp_path / "system.iso"
    old.write_bytes(b"the previous disc")
    data = bytearray((out / "bzImage").read_bytes())
    data[-1] ^= 0x01
    (out / "bzImage").write_bytes(bytes(data))
    proc = run_netbuild("iso", str(out), "-o", str(old), check=False)
    assert proc.returncode == 1
    error = proc.stderr.decode().splitlines()[-1]
    assert error == f"error: self-check: system.iso: /bzImage differs from {out}/bzImage"
    assert old.read_bytes() == b"the previous disc" and sorted(p.name for p in tmp_path.iterdir()) == ["out",
                                                                                                      "system.iso"]


# --- the chain ISO ----------------------------------------------------------------------------------

def _chain(built_out: Path, run_netbuild: RunNetbuild, tmp: Path, port: int) -> tuple[Path, str]:
    iso = tmp / "chain.iso"
    proc = run_netbuild("iso", "--chain", f"http://10.0.2.2:{port}/netboot.ipxe", "-o", str(iso), "-q")
    return iso, proc.stderr.decode()


@pytest.mark.boot
@pytest.mark.parametrize("uefi", [False, True], ids=["bios", "uefi"])
def test_the_chain_iso_boots_the_fixture_from_netbuild_serve(
    uefi: bool, built_out: Path, run_netbuild: RunNetbuild, system_closure: SystemClosure, tmp_path: Path
) -> None:
    """BIOS everywhere. UEFI with an iPXE for UEFI that runs autoexec.ipxe (1.21 on: Debian 13's);
    with Debian 12's (2019), which runs no script from a disc, the disc is BIOS-only and says so
    (_assert_bios_only): each release proves what its iPXE can do, neither is skipped."""
    if uefi and not NEW_IPXE:
        _assert_bios_only(built_out, run_netbuild, tmp_path)
        return
    with netbuild_serve(str(built_out)) as server:
        iso, _ = _chain(built_out, run_netbuild, tmp_path, urlsplit(server.url).port or 0)
        assert iso.stat().st_size < 8 << 20  # iPXE, ISOLINUX, a script
        run = netbuild_boot(iso, *(["--uefi"] if uefi else []), "--expect", MARKER)
        log = server.stop()
    assert run.returncode == 0, run.explain()
    assert "netbuild chain ISO: fetching http://10.0.2.2:" in run.console
    assert ("ISOLINUX" in run.console) != uefi
    assert [line.split('"')[1] for line in log if '"GET' in line] == ["GET /netboot.ipxe", "GET /bzImage",
                                                                       "GET /initrd"]
    assert_guest_store(run.console, system_closure.paths, (built_out / "registration").read_bytes())


def _assert_bios_only(built_out: Path, run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    """With an iPXE that runs no script from a disc, the chain ISO is BIOS-only and says so."""
    iso, stderr = _chain(built_out, run_netbuild, tmp_path, 8080)
    assert stderr == (f"warning: the chain ISO boots BIOS machines only: {HOST_IPXE_EFI} is an iPXE older than 1.21 "
                      "(Debian 12's is from 2019), which runs no script from a disc; pass --ipxe-efi FILE (iPXE 1.21 "
                      "or later, e.g. Debian 13's ipxe.efi) for UEFI\n")
    listing = json.loads(run_netbuild("inspect", str(iso), "--json").stdout)
    assert [b["platform"] for b in listing["boot"]] == ["BIOS"] and listing["hybrid"] == "MBR"
    files = _members(iso)
    assert sorted(files) == ["chain.ipxe", "ipxe.lkrn", "isolinux/boot.cat", "isolinux/isolinux.bin",
                             "isolinux/isolinux.cfg", "isolinux/ldlinux.c32"]
    assert b"\ndhcp && chain http://10.0.2.2:8080/netboot.ipxe || goto retry\n" in files["chain.ipxe"]
    assert b"  LINUX /ipxe.lkrn\n  INITRD /chain.ipxe\n" in files["isolinux/isolinux.cfg"]
