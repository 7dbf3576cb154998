"""`netbuild size --html`: one self-contained HTML page (no network) with a treemap of the sizes."""

from __future__ import annotations

import html
import json
from importlib.resources import files

from builder.look.sizes import Sizes

TEMPLATE = "treemap.html"


def treemap_html(sizes: Sizes) -> str:
    data = {
        "source": sizes.source,
        "initrdBytes": sizes.initrd_bytes,
        "paths": [{"path": p.path, "name": p.name, "size": p.size, "entries": p.files} for p in sizes.paths],
    }
    # Inside <script>, "</" could end the element early; JSON allows the escaped form.
    payload = json.dumps(data, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    template = files("builder.look").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return template.replace("@TITLE@", html.escape(sizes.source)).replace("@DATA@", payload)
