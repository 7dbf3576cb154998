"""Where this machine keeps the firmware and boot programs netbuild starts or puts on media: OVMF
(and Debian's Secure Boot test build of it), iPXE for BIOS and for UEFI; for arm64, AAVMF (edk2
for QEMU's virt machine) and U-Boot's qemu_arm64 build. Debian/Ubuntu's paths
first, then other distributions'. One place, so that `netbuild boot` and `netbuild iso` look in
the same ones. Also what a firmware keeps between boots that `netbuild boot` gives it: U-Boot's
saved environment (uboot_env_flash).
"""

from __future__ import annotations

from pathlib import Path

from builder.errors import NetbuildError
from builder.formats.ubootenv import UbootEnvError, default_environment, environment_image
from builder.outcontract import BOOT_SCR

# OVMF as distributions install it: (code, variables template).
OVMF_CANDIDATES = (
    (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
    (Path("/usr/share/OVMF/OVMF_CODE.fd"), Path("/usr/share/OVMF/OVMF_VARS.fd")),
    (Path("/usr/share/edk2/ovmf/OVMF_CODE.fd"), Path("/usr/share/edk2/ovmf/OVMF_VARS.fd")),
    (Path("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd"), Path("/usr/share/edk2-ovmf/x64/OVMF_VARS.fd")),
)
# AAVMF, edk2 for arm64's virt machine (Debian: qemu-efi-aarch64; Fedora: edk2-aarch64): both
# files padded to the 64 MiB of virt's flash banks.
AAVMF_CANDIDATES = (
    (Path("/usr/share/AAVMF/AAVMF_CODE.fd"), Path("/usr/share/AAVMF/AAVMF_VARS.fd")),
    (Path("/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw"), Path("/usr/share/edk2/aarch64/vars-template-pflash.raw")),
)
# U-Boot built for QEMU's arm64 virt machine, started with -bios (Debian: u-boot-qemu).
UBOOT_CANDIDATES = (Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin"), Path("/usr/share/u-boot/qemu_arm64/u-boot.bin"))
# Where qemu_arm64's U-Boot keeps its environment (its defconfig: ENV_IS_IN_FLASH, ENV_ADDR 0x4000000,
# ENV_SIZE 0x40000): the start of virt's second flash bank, which is 64 MiB.
UBOOT_ENV_SIZE = 0x40000
VIRT_FLASH_SIZE = 64 << 20
# Debian's OVMF with its test keys enrolled (README.Debian: "for testing purposes only"): its db
# trusts /usr/share/ovmf/PkKek-1-snakeoil.pem, whose key signs test images.
SECURE_BOOT_OVMF = (Path("/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"))
# iPXE for UEFI using the firmware's network driver (SNP): what a UEFI machine's own PXE client loads.
IPXE_SNP_EFI_CANDIDATES = (
    Path("/usr/lib/ipxe/snponly.efi"),
    Path("/usr/share/ipxe/ipxe-snponly-x86_64.efi"),  # Fedora: ipxe-bootimgs-x64
    Path("/usr/share/ipxe/x86_64/snponly.efi"),
)
# iPXE for UEFI with its own drivers for every NIC it knows (and the firmware's SNP for the rest):
# started from a disc, not from a NIC, so not snponly.efi, which drives only the NIC it came from.
IPXE_EFI_CANDIDATES = (Path("/usr/lib/ipxe/ipxe.efi"), Path("/usr/share/ipxe/ipxe-x86_64.efi"))
IPXE_LKRN_CANDIDATES = (Path("/usr/lib/ipxe/ipxe.lkrn"), Path("/usr/share/ipxe/ipxe.lkrn"))


def first_present(candidates: tuple[Path, ...]) -> Path | None:
    return next((path for path in candidates if path.is_file()), None)


def _first_firmware(candidates: tuple[tuple[Path, Path], ...], what: str, install: str) -> tuple[Path, Path]:
    """The first (code, variables template) pair present, else an error saying what to install."""
    for code, variables in candidates:
        if code.is_file() and variables.is_file():
            return code, variables
    raise NetbuildError(f"{what} not found (looked for {candidates[0][0]} and others); install {install}")


def find_ovmf() -> tuple[Path, Path]:
    return _first_firmware(OVMF_CANDIDATES, "UEFI firmware", "OVMF (Debian: ovmf)")


def find_aavmf() -> tuple[Path, Path]:
    return _first_firmware(AAVMF_CANDIDATES, "arm64 UEFI firmware", "AAVMF (Debian: qemu-efi-aarch64)")


def find_uboot() -> Path:
    return _first_program(UBOOT_CANDIDATES, "U-Boot for QEMU's arm64 machine", "install it (Debian: u-boot-qemu)")


def find_secure_boot_ovmf() -> tuple[Path, Path]:
    if all(path.is_file() for path in SECURE_BOOT_OVMF):
        return SECURE_BOOT_OVMF
    raise NetbuildError(f"--secure-boot: {SECURE_BOOT_OVMF[0]} not found (Debian's ovmf has it, with test keys)")


def find_ipxe_snp_efi() -> Path:
    return _first_program(IPXE_SNP_EFI_CANDIDATES, "iPXE for UEFI", "a UEFI network boot starts it from the firmware; "
                          "install iPXE (Debian: ipxe) or pass --ipxe-efi", separator=":")


def _first_program(candidates: tuple[Path, ...], what: str, advice: str, *, separator: str = ";") -> Path:
    found = first_present(candidates)
    if found is None:
        raise NetbuildError(f"{what} not found (looked for {candidates[0]} and others){separator} {advice}")
    return found


def uboot_env_flash(uboot: Path, directory: Path) -> Path:
    """The board's saved environment: U-Boot's default one with boot_script_dhcp=boot.scr.uimg, as
    `setenv boot_script_dhcp boot.scr.uimg; saveenv` leaves it. U-Boot up to 2024.07 (Debian 12's
    2023.01) has it by default, and its DHCP boot target runs the script; U-Boot with bootstd only
    (Debian 13's 2025.01) has not, and without it fetches the boot file only as an EFI program."""
    try:
        entries = default_environment(uboot.read_bytes())
        entries["boot_script_dhcp"] = BOOT_SCR
        image = environment_image(entries, UBOOT_ENV_SIZE)
    except (OSError, UbootEnvError) as e:
        raise NetbuildError(f"{uboot}: cannot make its environment: {e}") from None
    flash = directory / "uboot-env.fd"
    flash.write_bytes(image + b"\xff" * (VIRT_FLASH_SIZE - len(image)))  # erased flash reads 0xff
    return flash
