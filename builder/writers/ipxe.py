"""iPXE scripts rendered from templates in the repository's `ipxe/` directory.

Templates use @name@ placeholders (builder.writers.template) because iPXE itself owns the `${…}`
syntax: `${cmdline}` must reach iPXE untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

from builder.errors import NetbuildError
from builder.outcontract import NETBOOT_IPXE
from builder.resources import data_dir
from builder.writers.template import Values, substitute

TEMPLATES_DIR = data_dir("ipxe")


def render(template: str, values: Values) -> bytes:
    """ipxe/<template> filled in. The templates of OUT's netboot.ipxe and `netbuild menu`'s menu.ipxe
    bear the names of the files they become, which builder/outcontract.py holds."""
    path = TEMPLATES_DIR / template
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetbuildError(f"iPXE template {path} is missing") from None
    return substitute(text, values, template=template).encode()


def base_prefix(base_url: str | None) -> str:
    """'' for URIs relative to the script's own location, else the URL ending in '/'."""
    if not base_url:
        return ""
    return base_url if base_url.endswith("/") else base_url + "/"


def netboot_script(*, cmdline: str, base_url: str | None, toplevel: str | None, description: str) -> bytes:
    return render(
        NETBOOT_IPXE,
        {
            "base": base_prefix(base_url),
            "cmdline": cmdline,
            "toplevel": toplevel or "the closure",
            "description": description,
        },
    )


def uki_script(*, cmdline: str, base_url: str | None, toplevel: str | None, description: str) -> bytes:
    """netboot-uki.ipxe: iPXE chain-loading netboot.efi with the image's command line (see the template)."""
    return render(
        "netboot-uki.ipxe",
        {"base": base_prefix(base_url), "cmdline": cmdline, "toplevel": toplevel or "the closure",
         "description": description},
    )


def chain_script(*, target: str, settings: Sequence[tuple[str, str]]) -> bytes:
    """A one-boot script: set iPXE variables (e.g. cmdline), then chain-load `target`."""
    return render(
        "boot-chain.ipxe",
        {"target": target, "setting": [{"name": name, "value": value} for name, value in settings]},
    )
