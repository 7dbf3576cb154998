"""The memory an image needs to boot, stated before it boots (manifest.json's memory.bootMiB, the
build summary, run-qemu's default): on a closure of more than 300 MB, in each layout, that much RAM
boots it and three quarters of it does not — the statement follows the kernel's real threshold
(builder/run/memory.py has the measurements)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RunNetbuild
from support.nixstore import path_info, run_nix
from support.qemu import kernel_release, try_boot
from support.squashfs import FixtureClosure, program_closure

pytestmark = [pytest.mark.nix, pytest.mark.boot]

PAYLOAD = Path("/usr/lib/chromium")  # Debian's chromium, which the suite installs for the treemap test
PARAMS = "console=ttyS0 panic=-1 loglevel=4"


@pytest.fixture(scope="module")
def big_closure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The real-root probe and, beside it, a store path of over 300 MB (host files in the store):
    the closure's JSON and the probe, which is init."""
    directory = tmp_path_factory.mktemp("big")
    probe: FixtureClosure = program_closure("realroot.nix", directory)
    payload = run_nix(["nix-store", "--add", str(PAYLOAD)]).strip()
    info = path_info([probe.root, payload])
    assert sum(e["narSize"] for e in info) > 300_000_000
    closure = directory / "big.json"
    closure.write_text(json.dumps(info))
    return closure, probe.root


def stated(out: Path) -> int:
    return int(json.loads((out / "manifest.json").read_text())["memory"]["bootMiB"])


@pytest.mark.parametrize("layout", ["initramfs", "squashfs"])
def test_the_stated_memory_boots_and_three_quarters_of_it_does_not(
    layout: str, big_closure: tuple[Path, str], kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    closure, init = big_closure
    out = tmp_path / "out"
    args = [str(closure), "-o", str(out), "--kernel", str(kernel_image), "--init", init, "--append", PARAMS]
    if layout == "squashfs":
        recipe = tmp_path / "squashfs-fast.toml"  # the layout, with a quicker compression than zstd:19
        recipe.write_text('layout = "squashfs"\nsquashfs_compress = "zstd:3"\n')
        args += ["--recipe", str(recipe), "--modules", str(Path("/lib/modules") / kernel_release(kernel_image))]
    summary = run_netbuild(*args).stdout.decode()
    need = stated(out)
    assert f"memory: boots with {need} MiB of RAM or more" in summary
    assert f"memory=${{QEMU_MEMORY:-{need}}}" in (out / "run-qemu").read_text()
    append = (out / "kernel-params").read_text().strip()

    enough = try_boot(out / "bzImage", out / "initrd", append, memory_mb=need)
    assert enough.booted and "NETBUILD-PIVOT-OK" in enough.console, enough.console[-3000:]
    short = try_boot(out / "bzImage", out / "initrd", append, memory_mb=need * 3 // 4)
    assert not short.booted, f"{need * 3 // 4} MiB booted too: the statement ({need} MiB) is not tight"
    assert "Kernel panic" in short.console or "Out of memory" in short.console, short.console[-3000:]
