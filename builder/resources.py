"""Where the data files live: recipes/ and ipxe/.

In a checkout they sit at the top of the repository, beside builder/; an installed netbuild
carries them inside the package as builder.recipes and builder.ipxe (see pyproject.toml).
"""

from __future__ import annotations

import importlib
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    try:
        package = importlib.import_module(f"builder.{name}")
        return Path(next(iter(package.__path__)))
    except ModuleNotFoundError:
        return _CHECKOUT / name
