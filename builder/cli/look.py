"""`netbuild check`, `netbuild inspect`, `netbuild diff`, `netbuild size`: looking inside."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click

from builder.checks.selfcheck import check_out
from builder.errors import NetbuildError
from builder.formats.iso import SECTOR, is_iso, read_iso
from builder.look.diff import diff
from builder.look.inspect import inspect_initrd
from builder.look.sizes import OTHER, sizes_of
from builder.look.treemap import treemap_html
from builder.outcontract import INITRD, MANIFEST, SHA256SUMS, open_regular
from builder.progress import human_bytes

_PATH = click.Path(path_type=Path)


@click.command("check")
@click.argument("out", type=_PATH, metavar="OUT")
@click.option("--iso", "isos", multiple=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              metavar="FILE.iso", help="Also check that this disc (netbuild iso OUT) boots OUT (repeatable); "
                                       "the *.iso files inside OUT are checked without it.")
def check_command(out: Path, isos: tuple[Path, ...]) -> None:
    """Re-check an existing OUT directory, as the build checks it before publishing.

    Every artifact's size and sha256 against manifest.json and SHA256SUMS, the
    bzImage header, and every initrd member decompressed and parsed record by
    record, with the store paths found compared with the recorded closure.
    A disc made from OUT (in OUT, or named with --iso) must hold OUT's kernel,
    initrd and command line for ISOLINUX, and a unified kernel image of them
    for UEFI. Exit status 0 when all is well; one `error:` line otherwise.

    \b
    Examples:
      netbuild check out/
      netbuild check /srv/http/lab1/ && echo ready to serve
      netbuild check out/ --iso system.iso
    """
    from builder.writers.isodisc import check_disc_of_out  # pycdlib and mtools only when there is a disc

    if not out.is_dir():
        raise NetbuildError(f"{out}: not a directory (expected a netbuild OUT directory)")
    report = check_out(out)
    click.echo(f"{out}: ok: {report.artifacts} files match {MANIFEST} and {SHA256SUMS}; initrd: {report.members} "
               f"member{'s' if report.members != 1 else ''}, {report.entries} entries, "
               f"{report.store_paths} store paths")
    inside = sorted(p for p in out.iterdir() if p.suffix == ".iso")
    for iso in inside:
        open_regular(iso).close()  # a disc in OUT is OUT's own file, not a link to one elsewhere
    for iso in [*inside, *(p for p in isos if p.resolve() not in {i.resolve() for i in inside})]:
        listing = check_disc_of_out(iso, out)
        click.echo(f"{iso}: ok: boots {out}'s kernel, initrd and command line from a CD or a USB stick, BIOS "
                   f"(ISOLINUX) and UEFI (a unified kernel image); volume {listing.volume_id}")


@click.command("inspect")
@click.argument("initrd", type=_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print members and entries as JSON.")
@click.option("--members", "members_only", is_flag=True, help="List only the members, not every entry.")
def inspect_command(initrd: Path, as_json: bool, members_only: bool) -> None:
    """List an initrd's members (offset, compression, sizes, entry count) and entries.

    Reads any Linux initrd the way the kernel does: netbuild's, Debian's
    (uncompressed early microcode, then the compressed main archive), NixOS's,
    or one made by GNU cpio with any codec the kernel knows (gzip, zstd, xz,
    lzma, bzip2, lz4 legacy; lzo through the `lzop` program). INITRD may also be
    an OUT directory, a unified kernel image (netboot.efi): its sections,
    then the initrd inside it, or an ISO image: its El Torito boot entries
    (and the files of a UEFI entry's FAT image) and its files.

    \b
    Examples:
      netbuild inspect out/initrd
      netbuild inspect /boot/initrd.img-$(uname -r) --members
      netbuild inspect out/ --json | jq '.entries[] | select(.size > 1000000)'
      netbuild inspect out/netboot.efi --members
      netbuild inspect system.iso
    """
    path = initrd / INITRD if initrd.is_dir() else initrd
    try:
        open_regular(path, follow=True).close()  # a FIFO would never end, a device never start
    except OSError as error:
        raise NetbuildError(f"{path}: cannot read: {error.strerror}") from None
    if is_iso(path):
        _inspect_iso(path, as_json)
        return
    listing = inspect_initrd(path, keep_entries=not members_only)
    if as_json:
        doc = listing.to_json()
        if members_only:
            del doc["entries"]
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    count = len(listing.members)
    if listing.uki is not None:
        click.echo(f"{path}: a unified kernel image, {listing.size} bytes, {len(listing.uki)} sections")
        click.echo(f"{'section':<10} {'offset':>12} {'size':>12} {'address':>12}")
        for s in listing.uki:
            click.echo(f"{s.name:<10} {s.offset:>12} {s.virtual_size:>12} {s.virtual_address:>#12x}")
        click.echo("its .initrd (offsets within the section):")
    entries = sum(m.entries for m in listing.members)  # counted even when not kept (--members)
    padding = f", {listing.padding} bytes of NUL padding" if listing.padding else ""
    click.echo(f"{path}: {listing.size} bytes, {count} member{'s' if count != 1 else ''}, {entries} entries{padding}")
    click.echo(f"{'member':>6} {'offset':>12} {'size':>12} {'compression':<11} {'unpacked':>12} {'entries':>8}")
    for m in listing.members:
        click.echo(f"{m.index:>6} {m.offset:>12} {m.size:>12} {m.compression:<11} {m.plain_size:>12} {m.entries:>8}")
    if members_only:
        return
    click.echo()
    click.echo(f"{'mode':<10} {'size':>10}  name")
    for e in listing.entries:
        name = e.name + (f" -> {e.target}" if e.target is not None else "")
        click.echo(f"{stat.filemode(e.mode):<10} {e.size:>10}  {name}")


def _inspect_iso(path: Path, as_json: bool) -> None:
    from builder.writers.fatimage import list_fat  # mtools reads the UEFI image

    listing = read_iso(path)
    fat = {b.lba: list_fat(path, b.lba * SECTOR) for b in listing.boot if b.platform == "UEFI" and b.bootable}
    if as_json:
        boot = [{**b.to_json(), **({"fatFiles": [{"path": p, "size": n} for p, n in fat[b.lba]]} if b.lba in fat
                                   else {})} for b in listing.boot]
        click.echo(json.dumps({**listing.to_json(), "boot": boot}, indent=2, ensure_ascii=False))
        return
    click.echo(f"{path}: an ISO 9660 image, {listing.size} bytes, volume {listing.volume_id!r}, "
               + (f"hybrid ({listing.hybrid}: boots from a USB stick too)" if listing.hybrid else "not hybrid"))
    click.echo(f"El Torito boot catalog: {len(listing.boot)} entr{'ies' if len(listing.boot) != 1 else 'y'}")
    click.echo(f"{'entry':>5} {'platform':<8} {'emulation':<12} {'bootable':<8} {'lba':>10} {'sectors':>8}  file")
    for index, b in enumerate(listing.boot, 1):
        click.echo(f"{index:>5} {b.platform:<8} {b.emulation:<12} {'yes' if b.bootable else 'no':<8} {b.lba:>10} "
                   f"{b.sectors:>8}  {b.file or '(no file)'}")
        for name, size in fat.get(b.lba, []):
            click.echo(f"{'':>5} {'':<8} FAT: {size:>12}  {name}")
    click.echo()
    click.echo(f"{'size':>12} {'offset':>12}  path")
    for f in listing.files:
        click.echo(f"{f.size:>12} {f.offset:>12}  {f.path}")


@click.command("diff")
@click.argument("a", type=_PATH)
@click.argument("b", type=_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
def diff_command(a: Path, b: Path, as_json: bool) -> None:
    """Compare two initrds or two OUT directories by store path.

    Lists the store paths added, removed and changed (same name, new hash),
    with their unpacked sizes, and the total difference.

    \b
    Examples:
      netbuild diff old-out/ out/
      netbuild diff /srv/http/lab1/initrd out/initrd --json
    """
    old, new = sizes_of(a), sizes_of(b)
    changes = diff(old, new)
    if as_json:
        click.echo(json.dumps({"a": old.source, "b": new.source, "unpackedDelta": new.total - old.total,
                               "initrdDelta": new.initrd_bytes - old.initrd_bytes,
                               "changes": [c.to_json() for c in changes]}, indent=2, ensure_ascii=False))
        return
    for c in changes:
        if c.kind == "changed":
            assert c.old is not None and c.new is not None
            click.echo(f"~ {c.name}: {human_bytes(c.old.size)} → {human_bytes(c.new.size)} ({_signed(c.delta)})\n"
                       f"    {c.old.path}\n    {c.new.path}")
        elif c.kind == "added":
            assert c.new is not None
            click.echo(f"+ {c.new.path} ({human_bytes(c.new.size)})")
        else:
            assert c.old is not None
            click.echo(f"- {c.old.path} ({human_bytes(c.old.size)})")
    summary = {kind: sum(1 for c in changes if c.kind == kind) for kind in ("added", "removed", "changed")}
    click.echo(f"{summary['added']} added, {summary['removed']} removed, {summary['changed']} changed; unpacked "
               f"{_signed(new.total - old.total)}, initrd {_signed(new.initrd_bytes - old.initrd_bytes)}")


def _signed(delta: int) -> str:
    return ("+" if delta >= 0 else "-") + human_bytes(abs(delta))


@click.command("size")
@click.argument("target", type=_PATH, metavar="OUT|INITRD")
@click.option("--html", "html_file", type=_PATH, metavar="FILE",
              help="Also write a self-contained HTML page with a treemap of the store paths by size.")
@click.option("--json", "as_json", is_flag=True, help="Print the sizes as JSON.")
@click.option("-n", "--top", type=click.IntRange(min=1), default=None, help="Show only the N largest.")
def size_command(target: Path, html_file: Path | None, as_json: bool, top: int | None) -> None:
    """Which store paths take the space in an initrd, largest first.

    Sizes are the bytes each store path unpacks to (file data and symlink
    targets). With --html, a page that works offline shows them as a treemap.

    \b
    Examples:
      netbuild size out/
      netbuild size out/ --top 10 --html size.html && xdg-open size.html
    """
    sizes = sizes_of(target)
    if html_file is not None:
        try:
            html_file.write_text(treemap_html(sizes), encoding="utf-8")
        except OSError as e:
            raise NetbuildError(f"{html_file}: cannot write: {e.strerror}") from None
    shown = sizes.paths[:top] if top else sizes.paths
    if as_json:
        click.echo(json.dumps({"source": sizes.source, "initrdBytes": sizes.initrd_bytes, "unpacked": sizes.total,
                               "paths": [{"path": p.path, "size": p.size, "entries": p.files} for p in shown]},
                              indent=2, ensure_ascii=False))
        return
    total = sizes.total or 1
    for p in shown:
        click.echo(f"{human_bytes(p.size):>10} {100 * p.size / total:5.1f}%  {p.path}")
    count = sum(p.path != OTHER for p in sizes.paths)
    click.echo(f"{human_bytes(sizes.total):>10} unpacked in {count} store paths; initrd "
               f"{human_bytes(sizes.initrd_bytes)}" + (f"; treemap: {html_file}" if html_file else ""))


COMMANDS: list[click.Command] = [check_command, inspect_command, diff_command, size_command]
