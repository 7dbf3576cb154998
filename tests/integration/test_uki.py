"""netboot.efi (--uki): a unified kernel image that UEFI firmware boots by itself.

Checked with independent tools (objdump lists its sections, objcopy takes them out, sbverify checks
the signature) and with real firmware: OVMF's own HTTP Boot client fetches it from `netbuild serve`
(no iPXE) and the guest's store digest equals the host's; with Secure Boot enforcing (Debian's
snakeoil OVMF and key) the signed image boots and the kernel says so, while an unsigned one, one
signed with another key and one whose initrd was changed after signing are refused by the firmware.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import RunNetbuild, SystemClosure
from support.netboot import MARKER, assert_guest_store, netbuild_boot

pytestmark = pytest.mark.nix

SNAKEOIL_KEY = Path("/usr/share/ovmf/PkKek-1-snakeoil.key")  # encrypted, passphrase "snakeoil"
SNAKEOIL_CERT = Path("/usr/share/ovmf/PkKek-1-snakeoil.pem")
SNAKEOIL_ENV = {"NETBUILD_TEST_SNAKEOIL": "snakeoil"}


def sections(efi: Path) -> dict[str, tuple[int, int]]:
    """objdump's section table: name → (size, file offset)."""
    table = subprocess.run(["objdump", "-h", str(efi)], capture_output=True, text=True, check=True).stdout
    found = re.findall(r"^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", table, re.MULTILINE)
    return {name: (int(size, 16), int(offset, 16)) for name, size, offset in found}


def section_bytes(efi: Path, name: str, tmp: Path) -> bytes:
    out = tmp / f"section{name}"
    subprocess.run(["objcopy", "-O", "binary", f"--only-section={name}", str(efi), str(out)], check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def uki_out(system_closure: SystemClosure, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uki") / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out), "--uki")
    return out


@pytest.fixture(scope="module")
def signed_out(system_closure: SystemClosure, run_netbuild: RunNetbuild,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Signed with Debian's snakeoil key: an encrypted key, its passphrase in the environment."""
    out = tmp_path_factory.mktemp("signed") / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out), "--uki", "--sign-key", str(SNAKEOIL_KEY),
                 "--sign-cert", str(SNAKEOIL_CERT), "--sign-passphrase-env", "NETBUILD_TEST_SNAKEOIL",
                 env={**os.environ, **SNAKEOIL_ENV})
    return out


def test_the_sections_hold_the_image(uki_out: Path, tmp_path: Path) -> None:
    found = sections(uki_out / "netboot.efi")
    assert {".text", ".sbat", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"} <= set(found)  # the stub's own too
    assert section_bytes(uki_out / "netboot.efi", ".initrd", tmp_path) == (uki_out / "initrd").read_bytes()
    linux = section_bytes(uki_out / "netboot.efi", ".linux", tmp_path)
    kernel = (uki_out / "bzImage").read_bytes()
    assert linux[: len(kernel)] == kernel and not linux[len(kernel):].strip(b"\0")  # objcopy maps the whole size
    cmdline = section_bytes(uki_out / "netboot.efi", ".cmdline", tmp_path)
    assert cmdline == (uki_out / "kernel-params").read_text().strip().encode()
    manifest = json.loads((uki_out / "manifest.json").read_text())
    assert manifest["uki"]["stub"].startswith("host /usr/lib/systemd/boot/efi/linuxx64.efi.stub")
    assert manifest["uki"]["signedBy"] is None
    assert "netboot.efi" in manifest["artifacts"] and "netboot.efi" in (uki_out / "SHA256SUMS").read_text()


def test_two_builds_give_the_same_image_signed_or_not(
    system_closure: SystemClosure, run_netbuild: RunNetbuild, uki_out: Path, signed_out: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    run_netbuild(str(system_closure.closure_json), "-o", str(again), "--uki", "--no-cache")
    assert (again / "netboot.efi").read_bytes() == (uki_out / "netboot.efi").read_bytes()
    signed_again = tmp_path / "signed-again"
    run_netbuild(str(system_closure.closure_json), "-o", str(signed_again), "--uki", "--sign-key", str(SNAKEOIL_KEY),
                 "--sign-cert", str(SNAKEOIL_CERT), "--sign-passphrase-env", "NETBUILD_TEST_SNAKEOIL",
                 env={**os.environ, **SNAKEOIL_ENV})
    assert (signed_again / "netboot.efi").read_bytes() == (signed_out / "netboot.efi").read_bytes()
    verify = subprocess.run(["sbverify", "--cert", str(SNAKEOIL_CERT), str(signed_out / "netboot.efi")],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "Signature verification OK" in verify.stdout + verify.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["--sign-key", str(SNAKEOIL_KEY), "--sign-cert", str(SNAKEOIL_CERT)],
     f"error: --sign-key {SNAKEOIL_KEY} is encrypted: name the environment variable that holds its passphrase "
     "with --sign-passphrase-env VAR\n"),
    (["--sign-cert", str(SNAKEOIL_CERT)], "error: signing needs both --sign-key and --sign-cert\n"),
])
def test_signing_problems_are_one_line_before_anything_is_written(
    system_closure: SystemClosure, run_netbuild: RunNetbuild, tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = run_netbuild(str(system_closure.closure_json), "-o", str(tmp_path / "out"), "--uki", *args, check=False)
    assert (proc.returncode, proc.stderr.decode()) == (1, expected)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_a_key_that_does_not_match_the_certificate_is_refused(
    system_closure: SystemClosure, run_netbuild: RunNetbuild, other_key: tuple[Path, Path], tmp_path: Path
) -> None:
    key, _ = other_key
    proc = run_netbuild(str(system_closure.closure_json), "-o", str(tmp_path / "out"), "--uki", "--sign-key",
                        str(key), "--sign-cert", str(SNAKEOIL_CERT), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (f"error: --sign-key {key} does not match --sign-cert {SNAKEOIL_CERT}: "
                                    "they hold different public keys\n")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A key and self-signed certificate the snakeoil firmware's db does not trust."""
    directory = tmp_path_factory.mktemp("other-key")
    key, cert = directory / "other.key", directory / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "3650", "-subj", "/CN=netbuild test, not trusted"],
                   check=True, capture_output=True)
    return key, cert


# --- real firmware ------------------------------------------------------------------------------

@pytest.mark.boot
def test_ovmf_http_boot_of_netboot_efi(uki_out: Path, system_closure: SystemClosure) -> None:
    """DHCP hands out the URL, OVMF's own HTTP client fetches netboot.efi (no iPXE ROM, no iPXE)."""
    run = netbuild_boot(uki_out, "--via", "uefi-http", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    assert "Start HTTP Boot over IPv4" in run.console and "iPXE" not in run.console
    assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" in run.console
    assert '"GET /netboot.efi" 200' in run.stderr
    assert_guest_store(run.console, system_closure.paths, (uki_out / "registration").read_bytes())


@pytest.mark.boot
def test_secure_boot_runs_the_signed_image(signed_out: Path, system_closure: SystemClosure) -> None:
    run = netbuild_boot(signed_out, "--via", "uefi-http", "--secure-boot", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    assert "EFI stub: UEFI Secure Boot is enabled." in run.console
    assert_guest_store(run.console, system_closure.paths, (signed_out / "registration").read_bytes())


def _copy_with(out: Path, tmp: Path, efi: Path) -> Path:
    copy = tmp / "out"
    shutil.copytree(out, copy)
    shutil.copyfile(efi, copy / "netboot.efi")
    return copy


@pytest.mark.boot
@pytest.mark.parametrize("image", ["unsigned", "signed with a key db does not trust", "initrd changed after signing"])
def test_secure_boot_refuses(image: str, uki_out: Path, signed_out: Path, other_key: tuple[Path, Path],
                             tmp_path: Path) -> None:
    efi = tmp_path / "netboot.efi"
    if image == "unsigned":
        shutil.copyfile(uki_out / "netboot.efi", efi)
    elif image.startswith("signed with"):
        key, cert = other_key
        subprocess.run(["sbsign", "--key", str(key), "--cert", str(cert), "--output", str(efi),
                        str(uki_out / "netboot.efi")], check=True, capture_output=True)
    else:
        data = bytearray((signed_out / "netboot.efi").read_bytes())
        size, offset = sections(signed_out / "netboot.efi")[".initrd"]
        data[offset + size // 2] ^= 0x01
        efi.write_bytes(bytes(data))
    run = netbuild_boot(_copy_with(signed_out, tmp_path, efi), "--via", "uefi-http", "--secure-boot",
                        "--expect", MARKER, timeout=120)
    assert run.returncode == 1, run.explain()
    assert "Access Denied" in run.stderr and "nothing booted" in run.stderr, run.explain()
    assert "EFI stub" not in run.console


@pytest.mark.boot
def test_ipxe_chain_loads_netboot_efi(uki_out: Path, system_closure: SystemClosure) -> None:
    """iPXE on UEFI (the firmware's PXE client loads the ipxe package's snponly.efi), then
    netboot-uki.ipxe: `chain netboot.efi <its parameters> ${cmdline}`. Without the parameters iPXE
    would hand the stub a command line of just "netboot.efi", which the stub would use instead of
    its own: the kernel would boot without console=ttyS0."""
    script = (uki_out / "netboot-uki.ipxe").read_text()
    assert f"chain netboot.efi {(uki_out / 'kernel-params').read_text().strip()} ${{cmdline}}" in script
    run = netbuild_boot(uki_out, "--via", "http", "--uefi", "--script", "netboot-uki.ipxe", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    assert '"GET /netboot.efi" 200' in run.stderr and '"GET /initrd"' not in run.stderr
    assert_guest_store(run.console, system_closure.paths, (uki_out / "registration").read_bytes())


def test_inspect_and_check_understand_the_image(uki_out: Path, run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    uki = json.loads(run_netbuild("inspect", str(uki_out / "netboot.efi"), "--json").stdout)
    plain = json.loads(run_netbuild("inspect", str(uki_out / "initrd"), "--json").stdout)
    assert [(s["name"], s["offset"]) for s in uki["sections"]] == [
        (name, offset) for name, (_, offset) in sections(uki_out / "netboot.efi").items()]  # objdump's table
    assert uki["members"] == plain["members"] and uki["entries"] == plain["entries"]  # the initrd inside it
    assert run_netbuild("check", str(uki_out)).returncode == 0
    # An image whose initrd is not OUT's, with manifest.json and SHA256SUMS made to agree: still refused.
    out = tmp_path / "out"
    shutil.copytree(uki_out, out)
    data = bytearray((out / "netboot.efi").read_bytes())
    size, offset = sections(out / "netboot.efi")[".initrd"]
    data[offset + size - 1] ^= 0x01
    (out / "netboot.efi").write_bytes(bytes(data))
    digest = hashlib.sha256(bytes(data)).hexdigest()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"]["netboot.efi"]["sha256"] = digest
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    sums = [line if not line.endswith("  netboot.efi") else f"{digest}  netboot.efi"
            for line in (out / "SHA256SUMS").read_text().splitlines()]
    manifest_digest = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    sums = [line if not line.endswith("  manifest.json") else f"{manifest_digest}  manifest.json" for line in sums]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    proc = run_netbuild("check", str(out), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "error: self-check: netboot.efi: section .initrd differs from initrd\n"
