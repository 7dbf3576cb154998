"""`netbuild iso`: removable media (a CD, a USB stick, a BMC's virtual media) that boot an OUT."""

from __future__ import annotations

from pathlib import Path

import click

from builder.errors import NetbuildError
from builder.writers.iso import write_iso
from builder.writers.isodisc import disc_for_chain, disc_for_out

_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


@click.command("iso")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False), metavar="OUT", required=False)
@click.option("-o", "--output", "iso", required=True, type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE.iso", help="The image to write (replaced in one step, never half-written).")
@click.option("--chain", "url", metavar="URL",
              help="Instead of OUT: a small disc that starts iPXE and boots the iPXE script at URL.")
@click.option("--label", metavar="TEXT",
              help="The volume label (default: the system's name; ISO 9660 keeps 32 of A-Z, 0-9 and _).")
@click.option("--efi-stub", type=_FILE, metavar="FILE",
              help="The systemd-stub for the UEFI side when OUT has no netboot.efi and the closure no systemd "
                   "(default: the host's, Debian's systemd-boot-efi).")
@click.option("--ipxe-lkrn", type=_FILE, metavar="FILE",
              help="--chain: iPXE for BIOS (default: /usr/lib/ipxe/ipxe.lkrn).")
@click.option("--ipxe-efi", type=_FILE, metavar="FILE",
              help="--chain: iPXE for UEFI, 1.21 or later (default: /usr/lib/ipxe/ipxe.efi if it is one).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors and warnings.")
def iso_command(out: Path | None, iso: Path, url: str | None, label: str | None, efi_stub: Path | None,
                ipxe_lkrn: Path | None, ipxe_efi: Path | None, quiet: bool) -> None:
    """Write FILE.iso, which boots OUT from a CD, a USB stick or virtual media.

    BIOS machines boot it through ISOLINUX (OUT's bzImage, initrd and
    kernel-params); UEFI machines start a unified kernel image of the same
    (OUT's netboot.efi, or one made now). It is a hybrid image: written to
    a USB stick as it is (dd, or any image writer), it boots both ways too.
    Two runs give the same bytes.

    With --chain URL instead of OUT, the disc is small: iPXE, which brings
    up the network and boots the iPXE script at URL (e.g. a netbuild serve).

    \b
    Examples:
      netbuild iso out/ -o system.iso
      sudo dd if=system.iso of=/dev/sdX bs=4M conv=fsync   # a USB stick
      netbuild iso --chain http://10.0.0.1:8080/netboot.ipxe -o chain.iso
      netbuild boot system.iso --uefi --via usb            # try it in QEMU
    """

    def say(message: str) -> None:
        if not quiet:
            click.echo(f"netbuild: {message}", err=True)

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    if (out is None) == (url is None):
        raise NetbuildError("name OUT, or --chain URL, but not both" if out else "name the OUT to put on the disc "
                            "(or --chain URL)")
    if url is not None:
        if efi_stub is not None:
            raise NetbuildError("--efi-stub is for a disc of OUT, not for --chain")
        disc = disc_for_chain(url, ipxe_lkrn=ipxe_lkrn, ipxe_efi=ipxe_efi, label=label, warn=warn)
    else:
        assert out is not None
        if ipxe_lkrn is not None or ipxe_efi is not None:
            raise NetbuildError("--ipxe-lkrn and --ipxe-efi are for --chain")
        disc = disc_for_out(out, efi_stub=efi_stub, label=label)
    listing = write_iso(iso, disc, log=say)
    if not quiet:
        click.echo(f"{iso}: {listing.size:,} bytes, volume {listing.volume_id}, {listing.hybrid} (a CD or a USB stick)")
        for note in disc.notes:
            click.echo(f"  {note}")


COMMANDS: list[click.Command] = [iso_command]
