"""Bootspec and specialisations on a real Nix closure: tests/fixtures/system.nix with withBootspec, whose
toplevel has a boot.json written as nixpkgs writes it and one specialisation, `fast` (a toplevel of its
own whose kernel parameters add netbuild.spec=fast).

- netboot.ipxe is a menu of the system and `fast`; QEMU boots it over TFTP and HTTP, and the guest's
  own /proc/cmdline shows which entry booted: the main system when the menu times out, `fast` when
  the iPXE variable netbuild-specialisation names it; both see the whole closure;
- read from boot.json or from the toplevel's symlinks, the same closure gives the same OUT, byte for
  byte, but for the manifest's record of where the choices came from;
- --specialisation fast builds the child; a boot.json field outside the closure, or a malformed
  boot.json, is one `error:` line naming the file and the field, and OUT stays as it was.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import RunNetbuild, SystemClosure
from support.netboot import MARKER, assert_guest_store, http_log, netbuild_boot
from support.squashfs import FixtureClosure, system_variant

from builder.build import build
from builder.closure import load_closure
from builder.plan import Options
from builder.recipe import load_recipe

pytestmark = [pytest.mark.boot, pytest.mark.nix]

V1 = "org.nixos.bootspec.v1"
FAST_WORD = "netbuild.spec=fast"
INIT = load_recipe("netboot").init_parameter  # how the recipe names init on the command line
_CMDLINE = re.compile(r"^NETBUILD-CMDLINE (.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def system(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    return system_variant(kernel_image, tmp_path_factory.mktemp("bootspec"), withBootspec=True)


@pytest.fixture(scope="module")
def fast(system: FixtureClosure) -> str:
    return system.path_named("-nixos-system-netbuild-test-fast")


@pytest.fixture(scope="module")
def menu_out(system: FixtureClosure, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT built with the default options: netboot.ipxe is the menu. Read-only."""
    out = tmp_path_factory.mktemp("menu-out") / "out"
    run_netbuild(str(system.closure_json), "-o", str(out), "-q")
    return out


def guest_cmdline(console: str) -> list[str]:
    """The words of the kernel command line the guest's init printed."""
    (line,) = _CMDLINE.findall(console)
    return line.split()


def tree(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def both_ways(system: FixtureClosure, recipe: str, run_netbuild: RunNetbuild, tmp: Path,
              *args: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The OUT `netbuild` builds (reading boot.json), and the OUT of the same closure built from the
    toplevel's symlinks (in-process, with the one switch that ignores boot.json)."""
    from_bootspec = tmp / "bootspec"
    run_netbuild(str(system.closure_json), "-o", str(from_bootspec), "-q", "--recipe", recipe, *args)
    from_symlinks = tmp / "symlinks"
    closure = load_closure(str(system.closure_json), system.closure_json.read_bytes())
    build(closure, load_recipe(recipe), Options(jobs=2, read_bootspec=False), from_symlinks)
    return tree(from_bootspec), tree(from_symlinks)


def test_the_fixture_is_shaped_as_nixpkgs_writes_it(system: FixtureClosure, fast: str) -> None:
    doc = json.loads(Path(system.root, "boot.json").read_text())
    child = json.loads(Path(fast, "boot.json").read_text())
    assert doc["org.nixos.specialisation.v1"] == {"fast": child}  # the child's whole boot.json
    assert child["org.nixos.specialisation.v1"] == {}
    assert doc[V1]["toplevel"] == system.root and child[V1]["toplevel"] == fast
    assert doc[V1]["kernel"] == child[V1]["kernel"] == str(Path(system.root, "kernel").resolve())
    assert child[V1]["kernelParams"] == [*doc[V1]["kernelParams"], FAST_WORD]
    assert Path(fast, "kernel-params").read_text() == " ".join(child[V1]["kernelParams"])
    assert Path(system.root, "specialisation", "fast").resolve() == Path(fast)


def test_the_out_holds_a_menu_and_a_script_per_entry(menu_out: Path, system: FixtureClosure, fast: str) -> None:
    params = (menu_out / "kernel-params").read_text()
    assert params == f"{INIT}={system.root}/init console=ttyS0 panic=-1 loglevel=4\n"  # the main system's
    menu = (menu_out / "netboot.ipxe").read_text()
    assert "choose --default main --timeout 5000 netbuild-specialisation || goto netbuild-cancelled\n" in menu
    assert "chain netboot-fast.ipxe || goto netbuild-failed\n" in menu
    assert (f"\nkernel bzImage initrd=initrd {INIT}={fast}/init console=ttyS0 panic=-1 loglevel=4 {FAST_WORD} "
            "${cmdline}\n") in (menu_out / "netboot-fast.ipxe").read_text()
    main = (menu_out / "netboot-main.ipxe").read_text()
    assert f"kernel bzImage initrd=initrd {params.strip()} ${{cmdline}}\n" in main
    manifest = json.loads((menu_out / "manifest.json").read_text())
    assert manifest["inputs"]["bootspec"] == {
        "file": f"{system.root}/boot.json", "specialisation": None, "kernel": '."org.nixos.bootspec.v1".kernel',
        "init": '."org.nixos.bootspec.v1".init', "kernelParams": '."org.nixos.bootspec.v1".kernelParams',
        "initrd": None}
    assert [e["name"] for e in manifest["settings"]["menu"]["entries"]] == ["main", "fast"]
    assert {"netboot-main.ipxe", "netboot-fast.ipxe"} <= set(manifest["artifacts"])


def test_without_a_choice_the_main_system_boots_after_the_timeout(menu_out: Path, system: FixtureClosure) -> None:
    run = netbuild_boot(menu_out, "--via", "tftp", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    words = guest_cmdline(run.console)
    assert f"{INIT}={system.root}/init" in words and FAST_WORD not in words, words
    assert "initrd=initrd" in words
    assert "netbuild test system (Linux" in run.console  # iPXE drew the menu: nothing skipped it
    assert_guest_store(run.console, system.paths, (menu_out / "registration").read_bytes())


def test_a_variable_boots_the_specialisation(menu_out: Path, system: FixtureClosure, fast: str) -> None:
    run = netbuild_boot(menu_out, "--via", "http", "--set", "netbuild-specialisation=fast", "--expect", MARKER)
    assert run.returncode == 0, run.explain()
    words = guest_cmdline(run.console)
    assert f"{INIT}={fast}/init" in words and FAST_WORD in words and "initrd=initrd" in words, words
    assert_guest_store(run.console, system.paths, (menu_out / "registration").read_bytes())
    fetched = [path for _, path, status, _ in http_log(run.stderr) if status == 200]
    assert fetched == ["/netboot.ipxe", "/netboot-fast.ipxe", "/bzImage", "/initrd"], run.stderr


def test_boot_json_and_the_symlinks_give_the_same_out(
    system: FixtureClosure, run_netbuild: RunNetbuild, menu_out: Path, tmp_path: Path
) -> None:
    a, b = both_ways(system, "netboot", run_netbuild, tmp_path, "--menu-timeout", "0")
    assert a.keys() == b.keys()
    assert {name for name in a if a[name] != b[name]} == {"manifest.json", "SHA256SUMS"}
    manifest_a, manifest_b = json.loads(a["manifest.json"]), json.loads(b["manifest.json"])
    provenance = manifest_a["inputs"].pop("bootspec")
    assert provenance["file"] == f"{system.root}/boot.json" and "bootspec" not in manifest_b["inputs"]
    assert manifest_a == manifest_b
    # With the menu, the main system's entry is that same script.
    assert (menu_out / "netboot-main.ipxe").read_bytes() == b["netboot.ipxe"]


def test_specialisation_builds_the_child(system: FixtureClosure, fast: str, run_netbuild: RunNetbuild,
                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_netbuild(str(system.closure_json), "-o", str(out), "-q", "--specialisation", "fast")
    params = (out / "kernel-params").read_text()
    assert params == f"{INIT}={fast}/init console=ttyS0 panic=-1 loglevel=4 {FAST_WORD}\n"
    assert f"kernel bzImage initrd=initrd {params.strip()} ${{cmdline}}\n" in (out / "netboot.ipxe").read_text()
    assert not list(out.glob("netboot-*.ipxe"))  # that one system, no menu
    provenance = json.loads((out / "manifest.json").read_text())["inputs"]["bootspec"]
    assert provenance["specialisation"] == "fast"
    assert provenance["kernelParams"] == '."org.nixos.specialisation.v1".fast."org.nixos.bootspec.v1".kernelParams'

    before = tree(out)
    proc = run_netbuild(str(system.closure_json), "-o", str(out), "--specialisation", "slow", check=False)
    assert (proc.returncode, proc.stderr.decode()) == (
        1, f"error: --specialisation slow: {system.root}/boot.json has no specialisation of that name (it has: fast)\n")
    assert tree(out) == before


def _edited_store(system: FixtureClosure, root: Path, edit: Any) -> Path:
    """The closure copied to root/nix/store (for --store-root), with the toplevel's boot.json edited."""
    (root / "nix" / "store").mkdir(parents=True)
    for path in system.paths:
        subprocess.run(["cp", "-a", path, str(root / path.lstrip("/"))], check=True)
    copy = root / system.root.lstrip("/")
    copy.chmod(0o755)
    (copy / "boot.json").chmod(0o644)
    (copy / "boot.json").write_bytes(edit(json.loads((copy / "boot.json").read_text())))
    return root


def _kernel_elsewhere(doc: dict[str, Any], outside: str) -> bytes:
    doc[V1]["kernel"] = f"{outside}/kernel"
    return json.dumps(doc).encode()


def test_refusals_name_the_file_and_the_field(
    system: FixtureClosure, system_closure: SystemClosure, run_netbuild: RunNetbuild, menu_out: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    shutil.copytree(menu_out, out)
    before = tree(out)
    outside = system_closure.toplevel  # a real store path, but not in this closure
    file = f"{system.root}/boot.json"
    fast_v1 = '."org.nixos.specialisation.v1".fast."org.nixos.bootspec.v1"'
    cases = [
        (lambda doc: _kernel_elsewhere(doc, outside),
         f'{file}: field ."org.nixos.bootspec.v1".kernel {outside}/kernel belongs to {outside}, which is not in the '
         "closure"),
        (lambda doc: b'{"org.nixos.bootspec.v1": {"kernel": ', f"{file}: not valid JSON ("),
        (lambda doc: json.dumps({**doc, V1: {**doc[V1], "kernelParams": "quiet"}}).encode(),
         f'{file}: field ."org.nixos.bootspec.v1".kernelParams must be a list of strings, not "quiet"'),
        (lambda doc: json.dumps({**doc, "org.nixos.specialisation.v1": {"fast": {V1: {
            k: v for k, v in doc["org.nixos.specialisation.v1"]["fast"][V1].items() if k != "init"}}}}).encode(),
         f"{file}: field {fast_v1}.init is missing"),
    ]
    for number, (edit, message) in enumerate(cases):
        root = _edited_store(system, tmp_path / f"store-{number}", edit)
        proc = run_netbuild(str(system.closure_json), "-o", str(out), "--store-root", str(root), check=False)
        stderr = proc.stderr.decode()
        assert proc.returncode == 1 and stderr.startswith(f"error: {message}") and stderr.count("\n") == 1, stderr
        assert tree(out) == before


def test_the_squashfs_stage_1_comes_from_boot_json(kernel_image: Path, run_netbuild: RunNetbuild,
                                                   tmp_path: Path) -> None:
    """withStage1: boot.json's `initrd` names the NixOS-style stage 1, which both the main system and `fast`
    use: the menu's entries share it, and the OUT equals the one built from <toplevel>/initrd."""
    staged = system_variant(kernel_image, tmp_path / "closure", withBootspec=True, withStage1=True)
    stage1 = json.loads(Path(staged.root, "boot.json").read_text())[V1]["initrd"]
    assert stage1 == str(Path(staged.root, "initrd").resolve())
    a, b = both_ways(staged, "netboot-squashfs", run_netbuild, tmp_path)
    assert a["initrd"].startswith(Path(stage1).read_bytes())  # copied byte for byte, first
    differ = {name for name in a.keys() | b.keys() if a.get(name) != b.get(name)}
    assert differ == {"manifest.json", "SHA256SUMS", "netboot.ipxe", "netboot-main.ipxe", "netboot-fast.ipxe"}
    assert a["netboot-main.ipxe"] == b["netboot.ipxe"]
    assert json.loads(a["manifest.json"])["inputs"]["bootspec"]["initrd"] == '."org.nixos.bootspec.v1".initrd'
