"""Recipes: the built-in ones load, and every field is validated with the file and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import NetbuildError
from builder.recipe import builtin_recipes, load_recipe


def test_builtin_netboot_recipe() -> None:
    r = load_recipe("netboot")
    assert (r.layout, str(r.compression), r.init_parameter) == ("initramfs", "zstd:10", "init")
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
        ("layout = 'vm-9p'\nsquashfs_compress = 'xz'\n", "field 'squashfs_compress' applies only to layout"),
        ("layout = 'vm-disk'\ninit_parameter = 'rdinit'\n", "must be 'init' with layout 'vm-disk'"),
        ("layout = 'vm-9p'\nstage1 = 'mine'\n", "field 'stage1' must be one of"),
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


def test_builtin_netboot_squashfs_recipe() -> None:
    r = load_recipe("netboot-squashfs")
    assert (r.layout, r.init_parameter, str(r.squashfs_compression), r.stage1) == ("squashfs", "init", "zstd:19",
                                                                                   "auto")
    assert r.settings()["squashfs_compress"] == "zstd:19" and r.settings()["stage1"] == "auto"
    assert "squashfs_compress" not in load_recipe("netboot").settings()  # the default recipe's manifest is unchanged


def test_squashfs_layout_defaults(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text("layout = 'squashfs'\n")
    r = load_recipe(str(f))
    assert (r.init_parameter, str(r.squashfs_compression), r.stage1) == ("init", "zstd:19", "auto")
    f.write_text("layout = 'squashfs'\nsquashfs_compress = 'zstd'\nstage1 = 'builtin'\n")
    r = load_recipe(str(f))
    assert (r.squashfs_compression.arguments(), r.stage1) == (["-comp", "zstd"], "builtin")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layout = 'squashfs'\nsquashfs_compress = 'brotli'\n", "field 'squashfs_compress': squashfs compression "
                                                                 "'brotli': unknown codec"),
        ("layout = 'squashfs'\nsquashfs_compress = 'zstd:23'\n", "zstd level must be 1..22"),
        ("layout = 'squashfs'\nsquashfs_compress = 'xz:9'\n", "xz takes no level"),
        ("layout = 'squashfs'\nstage1 = 'mine'\n", "field 'stage1' must be one of auto, toplevel, builtin"),
        ("layout = 'squashfs'\ninit_parameter = 'rdinit'\n", "field 'init_parameter' must be 'init' with layout "
                                                             "'squashfs'"),
        ("stage1 = 'builtin'\n", "field 'stage1' applies only to layout 'squashfs'"),
        ("layout = 'initramfs'\nsquashfs_compress = 'xz'\n", "field 'squashfs_compress' applies only to layout"),
    ],
)
def test_bad_squashfs_recipe_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(text)
    with pytest.raises(NetbuildError) as err:
        load_recipe(str(f))
    assert message in str(err.value) and str(f) in str(err.value)
