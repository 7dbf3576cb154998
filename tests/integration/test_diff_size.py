"""`netbuild diff` and `netbuild size`, on real OUT directories; the HTML treemap rendered by a real
headless Chromium (Debian's `chromium`), which must show the largest store path."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import SystemClosure
from support.broken import build_kinds
from support.qemu import kernel_release

pytestmark = pytest.mark.nix


@pytest.fixture(scope="module")
def other_out(kernel_image: Path, run_netbuild, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The `good` system of broken-systems.nix: the same kernel store path, another BusyBox package."""
    work = tmp_path_factory.mktemp("other")
    good = build_kinds(("good",), kernel_image, kernel_release(kernel_image), work)["good"]
    run_netbuild(str(good.closure_json), "-o", str(work / "out"))
    return work / "out"


def tree_bytes(path: str) -> int:
    """File data plus symlink targets under a store path, as the initrd holds them."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            if os.path.islink(full):
                total += len(os.readlink(full))
            elif name in files:
                total += os.path.getsize(full)
    return total if os.path.isdir(path) and not os.path.islink(path) else (
        len(os.readlink(path)) if os.path.islink(path) else os.path.getsize(path))


def test_diff_two_outs(built_out: Path, other_out: Path, system_closure: SystemClosure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(run_netbuild("diff", "--json", str(built_out), str(other_out)).stdout)
    other_paths = {p["path"] for p in json.loads((other_out / "manifest.json").read_text())["closure"]["storePaths"]}
    changes = {(c["kind"], c["name"]): c for c in doc["changes"]}
    # BusyBox: the same name, another hash (a different package), with each side's real size.
    busybox = changes[("changed", "busybox")]
    new_busybox = next(p for p in other_paths if p.endswith("-busybox"))
    assert busybox["old"] == {"path": system_closure.path_named("-busybox"),
                              "size": tree_bytes(system_closure.path_named("-busybox"))}
    assert busybox["new"] == {"path": new_busybox, "size": tree_bytes(new_busybox)}
    # The kernel's store path is the same derivation in both: not a change.
    assert not [c for c in doc["changes"] if "linux-" in c["name"]]
    assert ("removed", "content") in changes and ("removed", "greeting.txt") in changes
    assert ("added", "nixos-system-broken-good") in changes
    removed = {c["old"]["path"] for c in doc["changes"] if c["kind"] == "removed"}
    assert removed.isdisjoint(other_paths)
    assert doc["initrdDelta"] == (other_out / "initrd").stat().st_size - (built_out / "initrd").stat().st_size

    text = run_netbuild("diff", str(built_out / "initrd"), str(other_out / "initrd")).stdout.decode()
    assert "~ busybox: " in text and f"    {new_busybox}\n" in text
    assert re.search(r"^\d+ added, \d+ removed, 1 changed; unpacked -", text, re.MULTILINE), text
    same = run_netbuild("diff", str(built_out), str(built_out)).stdout.decode()
    assert same.startswith("0 added, 0 removed, 0 changed; unpacked +0 B, initrd +0 B")


def test_size_lists_the_largest_first_and_the_treemap_shows_it(  # type: ignore[no-untyped-def]
    built_out: Path, system_closure: SystemClosure, run_netbuild, tmp_path: Path
) -> None:
    page = tmp_path / "size.html"
    doc = json.loads(run_netbuild("size", str(built_out), "--json").stdout)
    sizes = [p["size"] for p in doc["paths"]]
    assert sizes == sorted(sizes, reverse=True)
    largest = doc["paths"][0]
    linux = system_closure.path_named(f"-linux-{kernel_release(built_out / 'bzImage')}")
    assert largest == {"path": linux, "size": tree_bytes(linux), "entries": 2}  # the directory and bzImage
    text = run_netbuild("size", str(built_out), "--top", "2", "--html", str(page)).stdout.decode()
    assert text.splitlines()[0].endswith(f"%  {linux}") and len(text.splitlines()) == 3

    html = page.read_text()
    assert "://" not in html.replace("http-equiv", "")  # nothing to fetch: the page is self-contained
    assert 'class="cell"' not in html  # the treemap is drawn by the page's script, not written out
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    ).stdout.decode()
    cells = re.findall(r'<div class="cell" data-path="([^"]+)" data-size="(\d+)"[^>]*style="([^"]+)"', dom)
    assert len(cells) == len([p for p in doc["paths"] if p["size"] > 0]), dom[:2000]
    assert cells[0][0] == linux and int(cells[0][1]) == largest["size"]

    def area(style: str) -> float:
        w = float(re.search(r"width: ([\d.]+)px", style)[1])  # type: ignore[index]
        h = float(re.search(r"height: ([\d.]+)px", style)[1])  # type: ignore[index]
        return w * h

    assert area(cells[0][2]) == max(area(c[2]) for c in cells) > 0.5 * sum(area(c[2]) for c in cells)
    # Its visible label: the name after the hash, and the size.
    label = re.search(rf'data-path="{re.escape(linux)}"[^>]*><div class="name">([^<]+)</div>', dom)
    assert label and label[1] == linux.split("-", 1)[1]
    shot = tmp_path / "treemap.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000  # a real picture was painted
