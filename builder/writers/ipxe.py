"""iPXE scripts rendered from templates in the repository's `ipxe/` directory.

Templates use @name@ placeholders (as nixpkgs' substituteAll does) because iPXE itself owns the
`${…}` syntax: `${cmdline}` must reach iPXE untouched.
"""

from __future__ import annotations

import re

from builder.errors import NetbuildError
from builder.resources import data_dir

TEMPLATES_DIR = data_dir("ipxe")
_PLACEHOLDER = re.compile(r"@([a-z_]+)@")


def render(template: str, values: dict[str, str]) -> bytes:
    path = TEMPLATES_DIR / template
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetbuildError(f"iPXE template {path} is missing") from None

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise NetbuildError(f"iPXE template {template}: unknown placeholder @{key}@")
        return values[key]

    return _PLACEHOLDER.sub(substitute, text).encode()


def base_prefix(base_url: str | None) -> str:
    """'' for URIs relative to the script's own location, else the URL ending in '/'."""
    if not base_url:
        return ""
    return base_url if base_url.endswith("/") else base_url + "/"


def netboot_script(*, cmdline: str, base_url: str | None, toplevel: str | None, description: str) -> bytes:
    return render(
        "netboot.ipxe",
        {
            "base": base_prefix(base_url),
            "cmdline": cmdline,
            "toplevel": toplevel or "the closure",
            "description": description,
        },
    )
