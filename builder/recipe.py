"""Recipes: TOML files saying how to boot a closure (layout, compression, init parameter, params).

Built-in recipes live in the repository's `recipes/` directory, one file each; a user may pass
their own file with `--recipe FILE`. Every field is checked here so that a typo is an error
naming the file and the field, not a surprise at boot time.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import NetbuildError
from builder.formats.compress import Compression, parse_compression
from builder.formats.streams import CompressionError
from builder.resources import data_dir
from builder.writers.squashfs import SquashfsCompression, SquashfsSpecError, parse_squashfs_compression

RECIPES_DIR = data_dir("recipes")
DEFAULT_RECIPE = "netboot"
LAYOUTS = ("initramfs", "squashfs", "vm-9p", "vm-disk")
# The layouts whose initrd starts with a stage 1 (which mounts the store, then runs init=).
STAGE1_LAYOUTS = ("squashfs", "vm-9p", "vm-disk")
# The layouts whose store is a squashfs image (in the initrd, or OUT/store.img beside it).
SQUASHFS_IMAGE_LAYOUTS = ("squashfs", "vm-disk")
INIT_PARAMETERS = ("rdinit", "init")
# Where the squashfs layout's stage 1 comes from: the toplevel's `initrd` when it has one (auto),
# always the toplevel's, or always netbuild's built-in one.
STAGE1_SOURCES = ("auto", "toplevel", "builtin")
# The init parameter: init= in every layout, read by what runs before init — netbuild's /init in the
# initramfs (builder/preinit) or the stage 1 that mounts the store. rdinit= makes the kernel run
# init straight from the initramfs instead, on a root where pivot_root fails.
DEFAULT_INIT_PARAMETER = "init"

_FIELDS = {"description", "layout", "compress", "init_parameter", "kernel_params", "squashfs_compress", "stage1"}
_SQUASHFS_FIELDS = ("squashfs_compress",)
_STAGE1_FIELDS = ("stage1",)
DEFAULT_SQUASHFS_COMPRESS = "zstd:19"  # as nixpkgs' netboot.squashfsCompression


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    layout: str
    compression: Compression
    init_parameter: str
    kernel_params: tuple[str, ...]
    sha256: str  # of the recipe file's bytes, recorded in the manifest
    squashfs_compression: SquashfsCompression | None = None  # SQUASHFS_IMAGE_LAYOUTS only
    stage1: str | None = None  # STAGE1_LAYOUTS only: one of STAGE1_SOURCES

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "name": self.name,
            "sha256": self.sha256,
            "layout": self.layout,
            "compress": str(self.compression),
            "init_parameter": self.init_parameter,
            "kernel_params": list(self.kernel_params),
        }
        if self.squashfs_compression is not None:
            settings["squashfs_compress"] = str(self.squashfs_compression)
        if self.stage1 is not None:
            settings["stage1"] = self.stage1
        return settings


def builtin_recipes() -> list[Path]:
    return sorted(RECIPES_DIR.glob("*.toml"))


def find_recipe(name_or_file: str) -> Path:
    """A recipe name (`netboot`) or a path to a TOML file."""
    candidate = Path(name_or_file)
    if candidate.suffix == ".toml" or "/" in name_or_file:
        if not candidate.is_file():
            raise NetbuildError(f"recipe file {name_or_file} does not exist")
        return candidate
    path = RECIPES_DIR / f"{name_or_file}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in builtin_recipes()) or "none"
        raise NetbuildError(f"unknown recipe {name_or_file!r} (built-in recipes: {known}; or pass a .toml file)")
    return path


def load_recipe(name_or_file: str) -> Recipe:
    path = find_recipe(name_or_file)
    raw = path.read_bytes()
    where = path.name if path.parent == RECIPES_DIR else str(path)
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise NetbuildError(f"recipe {where}: not valid TOML: {e}") from None
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise NetbuildError(f"recipe {where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")

    def field(key: str, kind: type, default: Any) -> Any:
        value = doc.get(key, default)
        if not isinstance(value, kind):
            raise NetbuildError(f"recipe {where}: field {key!r} must be a {kind.__name__}, got {value!r}")
        return value

    layout = field("layout", str, "initramfs")
    if layout not in LAYOUTS:
        raise NetbuildError(f"recipe {where}: field 'layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    init_parameter = field("init_parameter", str, DEFAULT_INIT_PARAMETER)
    if init_parameter not in INIT_PARAMETERS:
        raise NetbuildError(
            f"recipe {where}: field 'init_parameter' must be one of {', '.join(INIT_PARAMETERS)}, "
            f"got {init_parameter!r}"
        )
    if layout in STAGE1_LAYOUTS and init_parameter != "init":
        # rdinit= would run the system's init straight from the initramfs, where /nix/store is empty.
        raise NetbuildError(f"recipe {where}: field 'init_parameter' must be 'init' with layout {layout!r} "
                            "(its stage 1 mounts the store, then runs init=)")
    squashfs_compression, stage1 = None, None
    if layout in SQUASHFS_IMAGE_LAYOUTS:
        spec = field("squashfs_compress", str, DEFAULT_SQUASHFS_COMPRESS)
        try:
            squashfs_compression = parse_squashfs_compression(spec)
        except SquashfsSpecError as e:
            raise NetbuildError(f"recipe {where}: field 'squashfs_compress': {e}") from None
    else:
        _refuse_fields(doc, where, _SQUASHFS_FIELDS, SQUASHFS_IMAGE_LAYOUTS)
    if layout in STAGE1_LAYOUTS:
        stage1 = field("stage1", str, "auto")
        if stage1 not in STAGE1_SOURCES:
            raise NetbuildError(
                f"recipe {where}: field 'stage1' must be one of {', '.join(STAGE1_SOURCES)}, got {stage1!r}"
            )
    else:
        _refuse_fields(doc, where, _STAGE1_FIELDS, STAGE1_LAYOUTS)
    try:
        compression = parse_compression(field("compress", str, "zstd:10"))
    except CompressionError as e:
        raise NetbuildError(f"recipe {where}: field 'compress': {e}") from None
    params = field("kernel_params", list, [])
    if not all(isinstance(p, str) and p and not any(c.isspace() for c in p) for p in params):
        raise NetbuildError(f"recipe {where}: field 'kernel_params' must be a list of parameters without spaces")
    return Recipe(
        name=path.stem,
        description=field("description", str, ""),
        layout=layout,
        compression=compression,
        init_parameter=init_parameter,
        kernel_params=tuple(params),
        sha256=hashlib.sha256(raw).hexdigest(),
        squashfs_compression=squashfs_compression,
        stage1=stage1,
    )


def _refuse_fields(doc: dict[str, Any], where: str, fields: tuple[str, ...], layouts: tuple[str, ...]) -> None:
    for key in fields:
        if key in doc:
            names = ", ".join(f"'{name}'" for name in layouts)
            raise NetbuildError(f"recipe {where}: field {key!r} applies only to layout {names}")
