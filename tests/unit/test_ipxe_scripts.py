"""The scripts netbuild writes from templates: netboot.ipxe, menu.ipxe, the chain script of
`netbuild boot`, and run-qemu. What iPXE and bash will read, line for line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.errors import NetbuildError
from builder.writers import runqemu
from builder.writers.ipxe import TEMPLATES_DIR, chain_script, netboot_script
from builder.writers.menu import MenuImage, describe_image, menu_script, write_menu
from builder.writers.template import substitute

CMDLINE = "rdinit=/nix/store/aaaa-x/init console=ttyS0"


def test_substitute_fills_placeholders_and_repeats_blocks() -> None:
    text = "a @x@\n@foreach item@\n- @name@ (@x@)\n@end@\nz @x@\n"
    values = {"x": "X", "item": [{"name": "one"}, {"name": "t@x@o"}]}
    # A value is written as it is: its own @x@ is not substituted again.
    assert substitute(text, values, template="t") == "a X\n- one (X)\n- t@x@o (X)\nz X\n"
    assert substitute("@foreach item@\nnever\n@end@\n", {"item": []}, template="t") == ""


def test_substitute_refuses_unknown_placeholders_and_missing_lists() -> None:
    with pytest.raises(NetbuildError, match=r"template t: unknown placeholder @y@"):
        substitute("@y@", {"x": "1"}, template="t")
    with pytest.raises(NetbuildError, match=r"@foreach item@ has no list"):
        substitute("@foreach item@\n@end@\n", {"item": "flat"}, template="t")


def test_netboot_script_relative_and_absolute() -> None:
    relative = netboot_script(cmdline=CMDLINE, base_url=None, toplevel=None, description="d").decode()
    lines = [line for line in relative.splitlines() if line and not line.startswith("#")]
    assert relative.startswith("#!ipxe\n")
    assert lines == [f"kernel bzImage initrd=initrd {CMDLINE} ${{cmdline}}", "initrd initrd", "boot"]
    absolute = netboot_script(cmdline=CMDLINE, base_url="http://10.0.0.1/img", toplevel=None, description="d")
    assert f"kernel http://10.0.0.1/img/bzImage initrd=initrd {CMDLINE} ${{cmdline}}\n".encode() in absolute
    assert b"\ninitrd http://10.0.0.1/img/initrd\n" in absolute


def test_chain_script_sets_then_chains() -> None:
    script = chain_script(target="image/netboot.ipxe", settings=[("netbuild-image", "b"), ("cmdline", "quiet x=1")])
    lines = [line for line in script.decode().splitlines() if line and not line.startswith("#")]
    assert lines == ["set netbuild-image b", "set cmdline quiet x=1", "chain image/netboot.ipxe"]


def _images() -> list[MenuImage]:
    return [MenuImage("lab1", "lab1/netboot.ipxe", "nixos-system-a (netboot)"),
            MenuImage("lab2", "http://s/lab2/netboot.ipxe", "nixos-system-b (netboot)")]


def test_menu_script() -> None:
    script = menu_script(_images(), default="lab2", timeout_s=5, title="Lab machines", description="d").decode()
    body = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert body == [
        "isset ${netbuild-image} || goto netbuild-menu",
        "goto netbuild-image-${netbuild-image} || echo netbuild menu: no image named ${netbuild-image}",
        ":netbuild-menu",
        "menu Lab machines",
        "item lab1 lab1 - nixos-system-a (netboot)",
        "item lab2 lab2 - nixos-system-b (netboot)",
        "choose --default lab2 --timeout 5000 netbuild-image || goto netbuild-cancelled",
        "goto netbuild-image-${netbuild-image}",
        ":netbuild-image-lab1",
        "chain lab1/netboot.ipxe || goto netbuild-failed",
        ":netbuild-image-lab2",
        "chain http://s/lab2/netboot.ipxe || goto netbuild-failed",
        ":netbuild-cancelled",
        "echo netbuild menu: nothing chosen",
        "exit 1",
        ":netbuild-failed",
        "echo netbuild menu: could not boot ${netbuild-image}",
        "exit 1",
    ]
    default_first = menu_script(_images(), default=None, timeout_s=0, title="t", description="d")
    assert b"choose --default lab1 --timeout 0 netbuild-image" in default_first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default": "lab3"}, r"--default lab3: not one of the images \(lab1, lab2\)"),
        ({"timeout_s": -1}, r"--timeout -1"),
        ({"title": "two\nlines"}, r"--title must be one line"),
    ],
)
def test_menu_script_refuses(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"default": None, "timeout_s": 3, "title": "t", "description": "d", **kwargs}
    with pytest.raises(NetbuildError, match=message):
        menu_script(_images(), **args)  # type: ignore[arg-type]


def test_describe_image_addresses_the_script_from_the_menu(tmp_path: Path) -> None:
    out = tmp_path / "images" / "odd dir" / "lab-1"
    out.mkdir(parents=True)
    (out / "netboot.ipxe").write_text("#!ipxe\n")
    image = describe_image(out, tmp_path / "menus", None)
    assert (image.name, image.script, image.summary) == ("lab-1", "../images/odd%20dir/lab-1/netboot.ipxe",
                                                         "netbuild image")
    assert describe_image(out, tmp_path / "images", "http://s/x").script == "http://s/x/odd%20dir/lab-1/netboot.ipxe"
    bad = tmp_path / "bad name"
    bad.mkdir()
    (bad / "netboot.ipxe").write_text("#!ipxe\n")
    with pytest.raises(NetbuildError, match=r"the directory's name 'bad name' becomes the menu entry"):
        describe_image(bad, tmp_path, None)


def test_write_menu_is_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = write_menu(tmp_path / "new", b"#!ipxe\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"#!ipxe\n" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["menu.ipxe"]  # no temporary file left behind


def test_run_qemu_script_is_valid_bash_and_deterministic(tmp_path: Path) -> None:
    args = {"toplevel": "/nix/store/aaaa-sys", "description": "netbuild x", "boot_mib": 1664}
    script = runqemu.run_qemu_script(**args)  # type: ignore[arg-type]
    assert script == runqemu.run_qemu_script(**args)  # type: ignore[arg-type]
    assert script.startswith(b"#!/usr/bin/env bash\n") and b"@" + b"memory@" not in script
    assert b"memory=${QEMU_MEMORY:-1664}" in script and b'-m "$memory"' in script
    path = tmp_path / "run-qemu"
    path.write_bytes(script)
    subprocess.run(["bash", "-n", str(path)], check=True)  # bash parses it
    # Less than the image needs: a warning (QEMU itself is a stand-in that only prints its -m).
    fake = tmp_path / "qemu"
    fake.write_text('#!/bin/sh\nwhile [ "$1" != -m ]; do shift; done; echo "memory $2"\n')
    fake.chmod(0o755)
    for name in ("kernel-params", "bzImage", "initrd"):
        (tmp_path / name).write_text("x\n")
    env = {"PATH": "/usr/bin:/bin", "QEMU": str(fake)}
    small = subprocess.run(["bash", str(path)], env={**env, "QEMU_MEMORY": "1000"}, capture_output=True, text=True)
    assert small.stdout == "memory 1000\n"
    assert small.stderr == ("run-qemu: warning: QEMU_MEMORY=1000 MiB is less than the 1664 MiB this image "
                            "needs to boot\n")
    default = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True)
    assert (default.stdout, default.stderr) == ("memory 1664\n", "")


def test_every_template_is_shipped() -> None:
    assert {p.name for p in TEMPLATES_DIR.glob("*.ipxe")} >= {"netboot.ipxe", "menu.ipxe", "boot-chain.ipxe"}
    assert runqemu.TEMPLATE.is_file()
