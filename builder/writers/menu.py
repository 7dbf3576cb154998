"""iPXE menus, rendered from ipxe/menu.ipxe, each entry chain-loading a script of its own:

- `menu.ipxe` (`netbuild menu`): one menu over several netbuild images, each entry chain-loading that
  image's netboot.ipxe. An image's script is addressed relative to the menu (the path from the
  menu's directory to the image's, as a URL), or under --base-url when given: served from one
  directory tree — say /srv/http/menu.ipxe beside /srv/http/lab1/ and /srv/http/lab2/ — the menu and
  the images find each other on any server;
- an OUT's `netboot.ipxe` when its system has specialisations (boot.json): the main system and each
  specialisation, each entry chain-loading `netboot-<name>.ipxe` beside it, which boots the one
  bzImage and initrd with that entry's command line.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from builder.errors import NetbuildError
from builder.outcontract import MENU_IPXE, NETBOOT_IPXE, ManifestError, entry_script, mode_of, read_manifest
from builder.writers.ipxe import base_prefix, netboot_script, render

if TYPE_CHECKING:  # builder.plan imports this module for ENTRY_NAME and MAIN_ENTRY
    from builder.plan import Menu

# Becomes an iPXE label, a menu item, the value of the menu's variable and part of a file name:
# nothing iPXE would parse, no '/'.
ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAIN_ENTRY = "main"  # the entry of a system's own netboot.ipxe menu that boots the system itself


@dataclass(frozen=True)
class MenuKind:
    """What a menu chooses among: its iPXE variable and the words of its script."""

    variable: str  # set by the menu's `choose`, or beforehand to skip the menu
    noun: str
    choice: str
    entry_script: str  # what each entry chain-loads
    naming: str  # what the variable is set to
    menu_script: str  # the menu's own file, for the example in its header
    timeout_note: str


IMAGES = MenuKind(variable="netbuild-image", noun="image", choice="one of several netbuild images",
                  entry_script="that image's own netboot.ipxe", naming="an image's name", menu_script=MENU_IPXE,
                  timeout_note=" (0: wait for a choice)")
SPECIALISATIONS = MenuKind(variable="netbuild-specialisation", noun="specialisation",
                           choice="the system or one of its specialisations",
                           entry_script="that system's own netboot-<name>.ipxe",
                           naming=f"a specialisation's name (or {MAIN_ENTRY}: the system itself)",
                           menu_script=NETBOOT_IPXE, timeout_note="")
_STORE_NAME = re.compile(r"/nix/store/[0-9a-z]{32}-(.*)")


@dataclass(frozen=True)
class MenuImage:
    name: str  # the directory's name: the menu item and the value of ${netbuild-image}
    script: str  # URL of its netboot.ipxe, relative to the menu or absolute
    summary: str  # what it boots, from its manifest


def describe_image(out: Path, menu_dir: Path, base_url: str | None) -> MenuImage:
    """The menu entry for the netbuild output `out`, for a menu written into `menu_dir`."""
    if not (out / NETBOOT_IPXE).is_file():
        raise NetbuildError(f"{out}: no {NETBOOT_IPXE} here; pass directories written by `netbuild CLOSURE -o DIR`")
    name = out.resolve().name
    if not ENTRY_NAME.fullmatch(name):
        raise NetbuildError(
            f"{out}: the directory's name {name!r} becomes the menu entry and must be letters, digits, '.', '_' "
            "or '-' (starting with a letter or digit); rename the directory"
        )
    relative = Path(os.path.relpath(out.resolve(), menu_dir.resolve())) / NETBOOT_IPXE
    script = base_prefix(base_url) + "/".join(quote(part) for part in relative.parts)
    return MenuImage(name=name, script=script, summary=_summary(out))


def _summary(out: Path) -> str:
    try:
        manifest = read_manifest(out)
        toplevel = manifest.toplevel or manifest.init
        recipe = manifest.recipe
    except ManifestError:
        return "netbuild image"
    match = _STORE_NAME.fullmatch(toplevel)
    what = match.group(1) if match else toplevel
    return f"{what} ({recipe})"


def menu_script(
    images: Sequence[MenuImage], *, default: str | None, timeout_s: int, title: str, description: str
) -> bytes:
    """`netbuild menu`'s menu.ipxe; each refusal names the option at fault."""
    if not images:
        raise NetbuildError("a menu needs at least one image")
    names = [image.name for image in images]
    for name in names:
        if names.count(name) > 1:
            raise NetbuildError(f"two images are named {name!r} (the directories' names); rename one directory")
    chosen = default if default is not None else names[0]
    if chosen not in names:
        raise NetbuildError(f"--default {chosen}: not one of the images ({', '.join(names)})")
    if timeout_s < 0:
        raise NetbuildError(f"--timeout {timeout_s}: must be 0 (wait for a choice) or more seconds")
    if "\n" in title:
        raise NetbuildError("--title must be one line")
    return render_menu(IMAGES, images, default=chosen, timeout_s=timeout_s, title=title, description=description)


def render_menu(
    kind: MenuKind, entries: Sequence[MenuImage], *, default: str, timeout_s: int, title: str, description: str
) -> bytes:
    """ipxe/menu.ipxe over `entries` (checked by the caller), `default` booted after `timeout_s`."""
    return render(
        MENU_IPXE,
        {
            "description": description,
            "title": title,
            "default": default,
            "timeout_s": str(timeout_s),
            "timeout_ms": str(timeout_s * 1000),
            "variable": kind.variable,
            "noun": kind.noun,
            "choice": kind.choice,
            "entry_script": kind.entry_script,
            "naming": kind.naming,
            "menu_script": kind.menu_script,
            "timeout_note": kind.timeout_note,
            "image": [{"name": i.name, "script": i.script, "summary": i.summary} for i in entries],
        },
    )


def netboot_scripts(
    *, cmdline: str, base_url: str | None, toplevel: str | None, description: str, menu: Menu | None
) -> dict[str, bytes]:
    """An OUT's iPXE scripts: netboot.ipxe booting the system; or, with a menu, netboot.ipxe the menu
    and beside it one netboot-<name>.ipxe per entry (the main system's is what netboot.ipxe would be
    without the menu)."""
    if menu is None:
        return {NETBOOT_IPXE: netboot_script(cmdline=cmdline, base_url=base_url, toplevel=toplevel,
                                            description=description)}
    scripts = {
        entry_script(entry.name): netboot_script(cmdline=entry.cmdline, base_url=base_url,
                                                      toplevel=entry.toplevel, description=description)
        for entry in menu.entries
    }
    images = [MenuImage(name=entry.name, script=base_prefix(base_url) + entry_script(entry.name),
                        summary=entry.label) for entry in menu.entries]
    listing = render_menu(SPECIALISATIONS, images, default=MAIN_ENTRY, timeout_s=menu.timeout_s, title=menu.title,
                          description=description)
    return {NETBOOT_IPXE: listing, **scripts}


def write_menu(menu_dir: Path, script: bytes) -> Path:
    """Write DIR/menu.ipxe in one step (a server never sees half a menu); other files stay as they are."""
    try:
        menu_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{MENU_IPXE}.", dir=menu_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(script)
            os.chmod(tmp, mode_of(MENU_IPXE))  # served to other machines, whatever the umask
            os.replace(tmp, menu_dir / MENU_IPXE)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise NetbuildError(f"writing {menu_dir / MENU_IPXE}: {e.strerror}") from None
    return menu_dir / MENU_IPXE
