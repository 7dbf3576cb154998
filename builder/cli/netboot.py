"""`netbuild boot`, `netbuild serve`, `netbuild menu`: the netboot path."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from builder.build import netbuild_version
from builder.errors import NetbuildError
from builder.formats.iso import is_iso
from builder.outcontract import MENU_IPXE, NETBOOT_IPXE
from builder.run.accel import ACCELERATORS
from builder.run.qemu import QEMU, VIAS, BootOptions, boot
from builder.run.serve import MAX_WORKERS, Server, default_workers
from builder.writers.menu import describe_image, menu_script, write_menu

DEFAULT_EXPECT_TIMEOUT_S = 300.0


def _stderr(message: str) -> None:
    click.echo(f"netbuild: {message}", err=True)


def _setting(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r}: expected NAME=VALUE")
        pairs.append((name, setting))
    return tuple(pairs)


@click.command("boot")
@click.argument("out", type=click.Path(path_type=Path), metavar="OUT|FILE.iso")
@click.option("--via", type=click.Choice(VIAS), default=None,
              help="direct (the default for OUT): QEMU loads bzImage (arm64: Image) + initrd; tftp: QEMU's TFTP "
                   "server and its iPXE ROM; http: netbuild's HTTP server on loopback, iPXE chain-loads over HTTP; "
                   "uefi-http: the UEFI firmware's own HTTP Boot fetches netboot.efi (built with --uki), no iPXE "
                   "(AAVMF on arm64); "
                   "uboot (arm64): U-Boot fetches boot.scr.uimg over TFTP, which boots pxelinux.cfg/default; "
                   "cdrom (the default for FILE.iso), usb: the ISO image as a CD or a USB stick.")
@click.option("--uefi", is_flag=True,
              help="Boot through OVMF (UEFI) instead of SeaBIOS. With --via tftp/http the firmware's own PXE "
                   "client loads iPXE for UEFI (the ipxe package's snponly.efi), as on a real UEFI machine.")
@click.option("--ipxe-efi", type=click.Path(path_type=Path, dir_okay=False, exists=True), metavar="FILE",
              help="--uefi --via tftp/http: the iPXE EFI program the firmware loads "
                   "(default: /usr/lib/ipxe/snponly.efi).")
@click.option("--secure-boot", is_flag=True,
              help="UEFI with Secure Boot enforcing: Debian's OVMF with its snakeoil test keys, whose db trusts "
                   "/usr/share/ovmf/PkKek-1-snakeoil.pem (sign netboot.efi with that key to try it).")
@click.option("--expect", metavar="TEXT",
              help="Succeed as soon as TEXT appears on the console; fail on timeout, panic or QEMU exit.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help=f"Give up after S seconds (default with --expect: {DEFAULT_EXPECT_TIMEOUT_S:g}; without: none).")
@click.option("--memory", type=click.IntRange(min=64), metavar="MIB",
              help="Guest memory (default: what the image needs to boot, manifest.json's memory.bootMiB, "
                   "and at least 512); less than it needs is warned about.")
@click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True, help="Virtual CPUs.")
@click.option("--append", multiple=True, metavar="PARAMS",
              help="Extra kernel parameters (repeatable); over iPXE they travel in ${cmdline}.")
@click.option("--set", "settings", multiple=True, callback=_setting, metavar="NAME=VALUE",
              help="Set an iPXE variable before the script runs (tftp, http), e.g. netbuild-image=lab2.")
@click.option("--script", default=NETBOOT_IPXE, show_default=True, metavar="NAME",
              help="The iPXE script in OUT to boot (tftp, http), e.g. menu.ipxe.")
@click.option("--qemu-arg", "qemu_args", multiple=True, metavar="ARG", help="Pass ARG on to QEMU (repeatable).")
@click.option("--accel", type=click.Choice(ACCELERATORS), default="auto", show_default=True, envvar="NETBUILD_ACCEL",
              help="QEMU accelerator; auto uses KVM only if a test guest runs fast under it, else TCG "
                   "[env NETBUILD_ACCEL].")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=0, metavar="PORT",
              help="--via http: the HTTP server's port on 127.0.0.1 (default: any free one).")
@click.option("--qemu", default=None, metavar="BINARY",
              help=f"The QEMU to run [default: {QEMU}; qemu-system-aarch64 for an arm64 OUT].")
def boot_command(
    out: Path,
    via: str | None,
    uefi: bool,
    ipxe_efi: Path | None,
    secure_boot: bool,
    expect: str | None,
    timeout: float | None,
    memory: int | None,
    cpus: int,
    append: tuple[str, ...],
    settings: tuple[tuple[str, str], ...],
    script: str,
    qemu_args: tuple[str, ...],
    accel: str,
    port: int,
    qemu: str | None,
) -> None:
    """Boot OUT (or FILE.iso) in QEMU and stream its serial console to standard output.

    OUT is a directory written by `netbuild CLOSURE -o OUT` (or by `netbuild
    menu`, with --script menu.ipxe); FILE.iso an image written by `netbuild
    iso`, booted as a CD or a USB stick. Messages from netbuild, and QEMU's own,
    go to standard error. Without --expect, the exit status is 0 when the
    guest powers off; a kernel panic or a failing QEMU is an error.

    \b
    Examples:
      netbuild boot out/                                  # -kernel/-initrd, like run-qemu
      netbuild boot out/ --via tftp --expect 'login:'     # DHCP → iPXE → TFTP
      netbuild boot out/ --via http --uefi --timeout 120  # OVMF, iPXE over HTTP
      netbuild boot out/ --via uefi-http --secure-boot     # OVMF HTTP Boot of netboot.efi, no iPXE
      netbuild boot out/ --via tftp --append 'systemd.unit=rescue.target'
      netbuild boot images/ --via http --script menu.ipxe --set netbuild-image=lab2
      netbuild boot system.iso --via usb --uefi           # the ISO as a USB stick, OVMF
    """
    options = BootOptions(
        via=via or ("cdrom" if is_iso(out) else "direct"),
        uefi=uefi,
        script=script,
        expect=expect,
        timeout=timeout if timeout is not None else (DEFAULT_EXPECT_TIMEOUT_S if expect is not None else None),
        memory_mib=memory,
        cpus=cpus,
        append=" ".join(append),
        settings=settings,
        qemu_args=qemu_args,
        accel=accel,
        http_port=port,
        interactive=expect is None and sys.stdin.isatty(),
        qemu=qemu,
        ipxe_efi=ipxe_efi,
        secure_boot=secure_boot,
    )
    outcome = boot(out, options, log=_stderr)
    if expect is not None:
        _stderr(f"{expect!r} appeared after {outcome.elapsed:.1f} s")


@click.command("serve")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False), metavar="OUT...")
@click.option("--bind", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on; 0.0.0.0 (or ::) for other machines.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8080, show_default=True,
              help="Port to listen on (0: any free one, printed at start).")
@click.option("--workers", type=click.IntRange(min=1, max=MAX_WORKERS), metavar="N",
              help=f"Processes answering (default: one per core, at most {MAX_WORKERS}).")
def serve_command(dirs: tuple[Path, ...], bind: str, port: int, workers: int | None) -> None:
    """Serve OUT directories over HTTP for iPXE, until interrupted.

    One directory is served at /; several side by side, each under its own
    name (/lab1/netboot.ipxe, /lab2/netboot.ipxe). GET and HEAD, byte ranges,
    a 403 for any path that leaves the directories and for what is no regular
    file (a FIFO, a device, a socket, a symlink loop), a 404 for what is not
    there. One log line per request on standard output.

    Made for fleets booting at once: hundreds of connections are queued
    while they wait to be accepted, and answered by one process per core
    (--workers). A connection idle for 30 s (between requests, or while a
    request is still arriving) is closed, and so is one whose client takes
    nothing for 60 s while an answer is being sent.

    \b
    Examples:
      netbuild serve out/                        # http://127.0.0.1:8080/netboot.ipxe
      netbuild serve --bind 0.0.0.0 lab1/ lab2/  # http://<this host>:8080/lab1/netboot.ipxe
      netbuild serve /srv/netboot/ --port 80     # a menu.ipxe beside its images
    """

    def say(line: str) -> None:
        # Written whole and at once (one write: the worker processes' lines do not mix), and not
        # by click.echo, which asks the terminal driver about stdout on every line (a system call
        # per request).
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    server = Server(list(dirs), bind=bind, port=port, log=say)

    def stop(_signum: int, _frame: object) -> None:
        # Not an exception: one raised here could land between an answer and its log line.
        server.stop()

    # Ctrl-C or SIGTERM is how a server is meant to end: quietly, with status 0.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for prefix, root in server.tree.roots.items():
            say(f"serving {root} at {server.url}{prefix + '/' if prefix else ''}")
        server.serve_forever(workers or default_workers())
        say("stopped")
    finally:
        server.close()


@click.command("menu")
@click.argument("outs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False), metavar="OUT...")
@click.option("-o", "--out", "menu_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              metavar="DIR", help=f"Write DIR/{MENU_IPXE} (only that file; DIR may hold the images).")
@click.option("--default", "default", metavar="NAME", help="The image booted on timeout (default: the first).")
@click.option("--timeout", type=click.IntRange(min=0), default=10, show_default=True, metavar="S",
              help="Seconds before the default boots; 0 waits for a choice.")
@click.option("--title", default="netbuild images", show_default=True, help="The menu's title.")
@click.option("--base-url", metavar="URL",
              help="Absolute URL of DIR as served, for the entries (default: relative to menu.ipxe).")
def menu_command(
    outs: tuple[Path, ...], menu_dir: Path, default: str | None, timeout: int, title: str, base_url: str | None
) -> None:
    """Write DIR/menu.ipxe: an iPXE menu over several built images.

    Each image is named after its directory, and its entry chain-loads that
    directory's netboot.ipxe, addressed relative to DIR (or under --base-url),
    so serve DIR and the images from one tree. A machine skips the menu when
    the iPXE variable netbuild-image names an image.

    \b
    Examples:
      netbuild menu /srv/netboot/lab1 /srv/netboot/lab2 -o /srv/netboot
      netbuild serve /srv/netboot    # iPXE: chain http://server:8080/menu.ipxe
      netbuild menu lab1 lab2 -o . --default lab2 --timeout 5
      netbuild boot /srv/netboot --via http --script menu.ipxe --set netbuild-image=lab2
    """
    images = [describe_image(out, menu_dir, base_url) for out in outs]
    if base_url is not None and any(c.isspace() for c in base_url):
        raise NetbuildError(f"--base-url {base_url!r}: must be one word, like http://10.0.0.1/netboot/")
    script = menu_script(images, default=default, timeout_s=timeout, title=title,
                         description=f"netbuild {netbuild_version()} menu")
    written = write_menu(menu_dir, script)
    click.echo(f"{written}: {len(images)} images ({', '.join(i.name for i in images)}), "
               f"default {default or images[0].name} after {timeout} s")


COMMANDS: list[click.Command] = [boot_command, serve_command, menu_command]
