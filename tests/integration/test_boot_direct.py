"""Boot netbuild's OUT directly (QEMU -kernel/-initrd/-append, as a PXE loader would) and check
that the guest's /nix/store holds exactly the closure and the registration, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunNetbuild, SystemClosure
from support.digest import digest_of_lines, explain_mismatch, store_lines
from support.qemu import boot, parse_digest, parse_entries

pytestmark = [pytest.mark.boot, pytest.mark.nix]

# --compress value (None: the recipe's default, zstd) → magic the initrd must start with.
INITRD_MAGIC: dict[str | None, bytes] = {
    None: b"\x28\xb5\x2f\xfd",
    "gzip": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "none": b"070701",
}


def boot_out(out: Path) -> str:
    """Boot OUT the way its files describe: its kernel, its initrd, its kernel-params."""
    append = (out / "kernel-params").read_text()
    assert "\n" not in append.rstrip("\n"), f"kernel-params is not one line: {append!r}"
    return boot(out / "bzImage", out / "initrd", append.strip())


def assert_guest_store_is_closure(console: str, closure: SystemClosure, out: Path) -> None:
    registration = (out / "registration").read_bytes()
    expected = store_lines(closure.paths, registration)
    if parse_digest(console) != digest_of_lines(expected):
        raise AssertionError(
            "the guest's /nix/store differs from the closure plus registration:\n"
            + explain_mismatch(parse_entries(console), expected)
        )


@pytest.mark.parametrize("compress", list(INITRD_MAGIC), ids=lambda c: c or "default")
def test_boots_with_exactly_the_closure(
    compress: str | None,
    built_out: Path,
    system_closure: SystemClosure,
    run_netbuild: RunNetbuild,
    tmp_path: Path,
) -> None:
    if compress is None:
        out = built_out
    else:
        out = tmp_path / "out"
        run_netbuild(str(system_closure.closure_json), "-o", str(out), "--compress", compress)
    with open(out / "initrd", "rb") as f:
        head = f.read(8)
    assert head.startswith(INITRD_MAGIC[compress]), f"initrd starts {head!r}, not {compress or 'zstd'}"

    console = boot_out(out)

    assert_guest_store_is_closure(console, system_closure, out)
