"""The parts of netboot.efi below the build: where the stub comes from, how sections are laid out
(checked against the stub Debian ships), and what `serve` calls an .efi file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.closure import Closure, StoreFS, load_closure
from builder.errors import NetbuildError
from builder.formats.pe import NewSection, PEError, add_sections, read_sections
from builder.run.serve import _content_type
from builder.writers.uki import HOST_STUB, STUB_IN_SYSTEMD, find_stub

SYSTEMD = "/nix/store/" + "s" * 32 + "-systemd-257"
OTHER = "/nix/store/" + "a" * 32 + "-hello"


def store_with(tmp_path: Path, *, stub: bool) -> tuple[StoreFS, Closure]:
    for path in (SYSTEMD, OTHER):
        (tmp_path / path.lstrip("/")).mkdir(parents=True)
    if stub:
        target = tmp_path / SYSTEMD.lstrip("/") / STUB_IN_SYSTEMD
        target.parent.mkdir(parents=True)
        target.write_bytes(HOST_STUB.read_bytes())
    doc = [{"path": p, "references": [], "narSize": 1} for p in (SYSTEMD, OTHER)]
    return StoreFS(tmp_path), load_closure("closure.json", json.dumps(doc).encode())


def test_the_closures_systemd_stub_comes_first(tmp_path: Path) -> None:
    store, closure = store_with(tmp_path, stub=True)
    elsewhere = tmp_path / "my.stub"
    elsewhere.write_bytes(b"MZ")
    found = find_stub(closure, store, elsewhere)
    assert found.origin == f"{SYSTEMD}/{STUB_IN_SYSTEMD}"
    assert found.file == tmp_path / SYSTEMD.lstrip("/") / STUB_IN_SYSTEMD


def test_then_efi_stub_then_the_hosts(tmp_path: Path) -> None:
    store, closure = store_with(tmp_path, stub=False)
    mine = tmp_path / "my.stub"
    mine.write_bytes(HOST_STUB.read_bytes())  # a stub for the kernel's machine: find_stub reads its PE header
    assert find_stub(closure, store, mine).origin == "--efi-stub"
    assert find_stub(closure, store, None).file == HOST_STUB
    with pytest.raises(NetbuildError, match=r"--efi-stub .*: no such file"):
        find_stub(closure, store, tmp_path / "absent")


def test_sections_follow_the_stubs_own_without_a_gap() -> None:
    stub = HOST_STUB.read_bytes()
    _, own = read_sections(stub)
    headers, placed = add_sections(stub, [NewSection(".cmdline", 10), NewSection(".linux", 5000, 1 << 20, code=True)])
    _, sections = read_sections(headers)
    assert [s.name for s in sections] == [s.name for s in own] + [".cmdline", ".linux"]
    last_raw_end = max(s.offset + s.raw_size for s in own)
    assert placed[0].offset == len(headers) == last_raw_end  # a symbol table after the sections is dropped
    assert placed[1].offset == placed[0].offset + placed[0].raw_size
    assert placed[1].virtual_size == 1 << 20 and placed[1].virtual_address > placed[0].virtual_address
    with pytest.raises(PEError, match="1 to 8 ASCII characters"):
        add_sections(stub, [NewSection(".toolongname", 1)])
    with pytest.raises(PEError, match="4 GiB"):
        add_sections(stub, [NewSection(".initrd", (1 << 32) - 4096)])


def test_serve_names_efi_programs_and_media_as_uefi_http_boot_wants() -> None:
    assert _content_type(Path("netboot.efi")) == "application/efi"
    assert _content_type(Path("boot.iso")) == "application/vnd.efi-iso"
    assert _content_type(Path("disk.img")) == "application/vnd.efi-img"
    assert _content_type(Path("initrd")) == "application/octet-stream"
