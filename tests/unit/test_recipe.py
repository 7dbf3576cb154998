"""Recipes: the built-in ones load, and every field is validated with the file and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import NetbuildError
from builder.recipe import builtin_recipes, load_recipe


def test_builtin_netboot_recipe() -> None:
    r = load_recipe("netboot")
    assert (r.layout, str(r.compression), r.init_parameter) == ("initramfs", "zstd:10", "rdinit")
    assert "netboot" in [p.stem for p in builtin_recipes()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layout = 'initramfs'\nbogus = 1\n", "unknown field 'bogus'"),
        ("layout = 'floppy'\n", "field 'layout' must be one of"),
        ("compress = 'brotli'\n", "field 'compress'"),
        ("compress = 5\n", "field 'compress' must be a str"),
        ("init_parameter = 'boot'\n", "field 'init_parameter'"),
        ("kernel_params = ['a b']\n", "field 'kernel_params'"),
        ("layout = \n", "not valid TOML"),
    ],
)
def test_bad_recipe_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(text)
    with pytest.raises(NetbuildError) as err:
        load_recipe(str(f))
    assert message in str(err.value) and str(f) in str(err.value)


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(NetbuildError, match=r"unknown recipe 'nope'.*netboot"):
        load_recipe("nope")
