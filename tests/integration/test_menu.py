"""`netbuild menu`: one menu.ipxe over two images built from different closures. A machine that
sets ${netbuild-image} (here through `netbuild boot --set`) boots that image, not the default; one
that sets nothing gets the default when the menu times out; absolute --base-url URLs chain too.
Which image booted is read from the guest itself: its store digest and the system it lists."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RunNetbuild, SystemClosure
from support.netboot import (
    GUEST_HOST,
    MARKER,
    Relabelled,
    assert_guest_store,
    free_port,
    guest_toplevels,
    http_log,
    netbuild_boot,
    relabelled_system,
)

pytestmark = [pytest.mark.boot, pytest.mark.nix]


@dataclass(frozen=True)
class Images:
    alpha: SystemClosure  # the default entry
    beta: Relabelled  # the same system copied under another name: another closure, another digest


@pytest.fixture(scope="module")
def images(system_closure: SystemClosure, tmp_path_factory: pytest.TempPathFactory) -> Images:
    tmp = tmp_path_factory.mktemp("menu-closures")
    beta = relabelled_system(system_closure.toplevel, "beta", tmp)
    assert beta.toplevel != system_closure.toplevel
    return Images(alpha=system_closure, beta=beta)


def _tree(root: Path, images: Images, run_netbuild: RunNetbuild, base_url: str | None = None) -> Path:
    """root/alpha, root/beta and root/menu.ipxe (default alpha, 1 s timeout)."""
    for name, closure in (("alpha", images.alpha.closure_json), ("beta", images.beta.closure_json)):
        extra = ["--base-url", f"{base_url}{name}/"] if base_url else []
        run_netbuild(str(closure), "-o", str(root / name), "-q", *extra)
    extra = ["--base-url", base_url] if base_url else []
    run_netbuild("menu", str(root / "alpha"), str(root / "beta"), "-o", str(root), "--timeout", "1", *extra)
    return root


@pytest.fixture(scope="module")
def tree(images: Images, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("menu") / "netboot", images, run_netbuild)


def _assert_booted(console: str, booted: SystemClosure | Relabelled, other: SystemClosure | Relabelled,
                   out: Path) -> None:
    assert_guest_store(console, booted.paths, (out / "registration").read_bytes())
    assert guest_toplevels(console) == {booted.toplevel}, f"the guest's store holds {guest_toplevels(console)}"
    assert other.toplevel not in console


def test_menu_script_lists_both_images_relative_to_itself(tree: Path) -> None:
    menu = (tree / "menu.ipxe").read_text()
    assert menu.startswith("#!ipxe\n")
    assert "item alpha alpha - nixos-system-netbuild-test (netboot)\n" in menu
    assert "item beta beta - nixos-system-netbuild-beta (netboot)\n" in menu
    assert "choose --default alpha --timeout 1000 netbuild-image" in menu
    assert "chain alpha/netboot.ipxe || goto netbuild-failed\n" in menu
    assert "chain beta/netboot.ipxe || goto netbuild-failed\n" in menu
    assert oct(os.stat(tree / "menu.ipxe").st_mode & 0o777) == oct(0o644)


def test_a_variable_chooses_the_non_default_image(tree: Path, images: Images) -> None:
    run = netbuild_boot(tree, "--via", "tftp", "--script", "menu.ipxe", "--set", "netbuild-image=beta",
                        "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    _assert_booted(run.console, images.beta, images.alpha, tree / "beta")


def test_without_a_choice_the_default_boots_after_the_timeout(tree: Path, images: Images) -> None:
    run = netbuild_boot(tree, "--via", "http", "--script", "menu.ipxe", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    _assert_booted(run.console, images.alpha, images.beta, tree / "alpha")
    assert "netbuild images" in run.console  # iPXE drew the menu: nothing skipped it
    fetched = [path for _, path, status, _ in http_log(run.stderr) if status == 200]
    assert fetched == ["/menu.ipxe", "/alpha/netboot.ipxe", "/alpha/bzImage", "/alpha/initrd"], run.stderr


def test_absolute_base_urls_chain_through_the_menu(
    images: Images, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    """Menu and images built with --base-url for the server they will be on: every URL absolute."""
    port = free_port()
    base = f"http://{GUEST_HOST}:{port}/"
    root = _tree(tmp_path / "netboot", images, run_netbuild, base_url=base)
    assert f"chain {base}beta/netboot.ipxe || goto netbuild-failed\n" in (root / "menu.ipxe").read_text()
    assert f"\ninitrd {base}beta/initrd\n" in (root / "beta" / "netboot.ipxe").read_text()

    run = netbuild_boot(root, "--via", "http", "--port", str(port), "--script", "menu.ipxe",
                        "--set", "netbuild-image=beta", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    _assert_booted(run.console, images.beta, images.alpha, root / "beta")
    fetched = [path for _, path, status, _ in http_log(run.stderr) if status == 200]
    assert fetched == ["/menu.ipxe", "/beta/netboot.ipxe", "/beta/bzImage", "/beta/initrd"], run.stderr


def test_menu_refuses_what_it_cannot_offer(tree: Path, run_netbuild: RunNetbuild, tmp_path: Path) -> None:
    before = (tree / "menu.ipxe").read_bytes()
    cases = [
        (["menu", str(tree / "alpha"), str(tree / "beta"), "-o", str(tmp_path), "--default", "gamma"],
         "error: --default gamma: not one of the images (alpha, beta)\n"),
        (["menu", str(tree / "alpha"), str(tree / "alpha"), "-o", str(tmp_path)],
         "error: two images are named 'alpha' (the directories' names); rename one directory\n"),
        (["menu", str(tmp_path), "-o", str(tmp_path)],
         f"error: {tmp_path}: no netboot.ipxe here; pass directories written by `netbuild CLOSURE -o DIR`\n"),
    ]
    for args, message in cases:
        proc = run_netbuild(*args, check=False)
        assert (proc.returncode, proc.stderr.decode()) == (1, message)
    assert not (tmp_path / "menu.ipxe").exists()
    assert (tree / "menu.ipxe").read_bytes() == before
