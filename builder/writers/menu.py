"""`menu.ipxe`: one iPXE menu over several netbuild images, each entry chain-loading its netboot.ipxe.

An image's script is addressed relative to the menu (the path from the menu's directory to the
image's, as a URL), or under --base-url when given: served from one directory tree — say
/srv/http/menu.ipxe beside /srv/http/lab1/ and /srv/http/lab2/ — the menu and the images find each
other on any server. Rendered from ipxe/menu.ipxe.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from builder.errors import NetbuildError
from builder.writers.ipxe import base_prefix, render

MENU_NAME = "menu.ipxe"
SCRIPT_NAME = "netboot.ipxe"
MENU_MODE = 0o644
# Becomes an iPXE label, a menu item and the value of ${netbuild-image}: nothing iPXE would parse.
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_STORE_NAME = re.compile(r"/nix/store/[0-9a-z]{32}-(.*)")


@dataclass(frozen=True)
class MenuImage:
    name: str  # the directory's name: the menu item and the value of ${netbuild-image}
    script: str  # URL of its netboot.ipxe, relative to the menu or absolute
    summary: str  # what it boots, from its manifest


def describe_image(out: Path, menu_dir: Path, base_url: str | None) -> MenuImage:
    """The menu entry for the netbuild output `out`, for a menu written into `menu_dir`."""
    if not (out / SCRIPT_NAME).is_file():
        raise NetbuildError(f"{out}: no {SCRIPT_NAME} here; pass directories written by `netbuild CLOSURE -o DIR`")
    name = out.resolve().name
    if not _IMAGE_NAME.fullmatch(name):
        raise NetbuildError(
            f"{out}: the directory's name {name!r} becomes the menu entry and must be letters, digits, '.', '_' "
            "or '-' (starting with a letter or digit); rename the directory"
        )
    relative = Path(os.path.relpath(out.resolve(), menu_dir.resolve())) / SCRIPT_NAME
    script = base_prefix(base_url) + "/".join(quote(part) for part in relative.parts)
    return MenuImage(name=name, script=script, summary=_summary(out))


def _summary(out: Path) -> str:
    try:
        manifest = json.loads((out / "manifest.json").read_bytes())
        toplevel = manifest["inputs"]["toplevel"] or manifest["inputs"]["init"]
        recipe = manifest["recipe"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return "netbuild image"
    match = _STORE_NAME.fullmatch(str(toplevel))
    what = match.group(1) if match else str(toplevel)
    return f"{what} ({recipe})"


def menu_script(
    images: Sequence[MenuImage], *, default: str | None, timeout_s: int, title: str, description: str
) -> bytes:
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
    return render(
        MENU_NAME,
        {
            "description": description,
            "title": title,
            "default": chosen,
            "timeout_s": str(timeout_s),
            "timeout_ms": str(timeout_s * 1000),
            "image": [{"name": i.name, "script": i.script, "summary": i.summary} for i in images],
        },
    )


def write_menu(menu_dir: Path, script: bytes) -> Path:
    """Write DIR/menu.ipxe in one step (a server never sees half a menu); other files stay as they are."""
    try:
        menu_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{MENU_NAME}.", dir=menu_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(script)
            os.chmod(tmp, MENU_MODE)  # served to other machines, whatever the umask
            os.replace(tmp, menu_dir / MENU_NAME)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise NetbuildError(f"writing {menu_dir / MENU_NAME}: {e.strerror}") from None
    return menu_dir / MENU_NAME
