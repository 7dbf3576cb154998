"""`netbuild check OUT`: the build's self-check on an existing OUT. A fresh OUT passes; each kind of
damage (a flipped byte, a truncated or extended initrd, a manifest that disagrees) is one error line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from builder.checks.selfcheck import check_initrd
from builder.errors import NetbuildError
from builder.formats.initrd import Member

pytestmark = pytest.mark.nix


@pytest.fixture
def out(built_out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(built_out, copy)
    return copy


def check_fails(run_netbuild, out: Path) -> str:  # type: ignore[no-untyped-def]
    proc = run_netbuild("check", str(out), check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr


def reseal(out: Path, doc: dict) -> None:  # type: ignore[type-arg]
    """Rewrite manifest.json and its line in SHA256SUMS, as a careless tool would."""
    data = (json.dumps(doc, indent=2) + "\n").encode()
    (out / "manifest.json").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    lines = [f"{digest}  manifest.json" if line.endswith("  manifest.json") else line
             for line in (out / "SHA256SUMS").read_text().splitlines()]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_a_fresh_out_passes(built_out: Path, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((built_out / "manifest.json").read_text())
    proc = run_netbuild("check", str(built_out))
    paths = len(manifest["closure"]["storePaths"])
    entries = sum(m["entries"] for m in manifest["initrd"]["members"])
    members = len(manifest["initrd"]["members"])
    plural = "s" if members != 1 else ""
    assert proc.stdout.decode() == (f"{built_out}: ok: {len(manifest['artifacts']) + 1} files match manifest.json and "
                                    f"SHA256SUMS; initrd: {members} member{plural}, {entries} entries, "
                                    f"{paths} store paths\n")


def test_a_flipped_byte_in_the_initrd(out: Path, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    data = bytearray((out / "initrd").read_bytes())
    data[len(data) // 2] ^= 0x40
    (out / "initrd").write_bytes(data)
    assert check_fails(run_netbuild, out).startswith(f"error: {out}/initrd: sha256 ")


def test_a_damaged_initrd_behind_a_consistent_manifest(out: Path, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    """Even when manifest.json and SHA256SUMS were updated to match, decompression finds it."""
    data = bytearray((out / "initrd").read_bytes())
    data[len(data) // 2] ^= 0x40
    (out / "initrd").write_bytes(data)
    doc = json.loads((out / "manifest.json").read_text())
    old = doc["artifacts"]["initrd"]["sha256"]
    doc["artifacts"]["initrd"]["sha256"] = hashlib.sha256(data).hexdigest()
    sums = (out / "SHA256SUMS").read_text().replace(old, doc["artifacts"]["initrd"]["sha256"])
    (out / "SHA256SUMS").write_text(sums)
    reseal(out, doc)
    middle = len(data) // 2
    index, hit = next((i, m) for i, m in enumerate(doc["initrd"]["members"])
                      if m["offset"] <= middle < m["offset"] + m["size"])
    assert check_fails(run_netbuild, out).startswith(
        f"error: self-check: initrd: member {index} ({hit['role']}) at {hit['offset']}: {hit['compression']}: ")


def test_a_store_path_the_manifest_does_not_list(out: Path, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads((out / "manifest.json").read_text())
    dropped = doc["closure"]["storePaths"].pop(0)["path"]
    reseal(out, doc)
    assert check_fails(run_netbuild, out) == (f"error: self-check: initrd: {dropped} is in the initrd but not in "
                                              "the closure\n")


def test_missing_files_and_stray_sums(out: Path, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    (out / "registration").unlink()
    assert check_fails(run_netbuild, out) == f"error: {out}/registration: missing (listed in manifest.json)\n"
    shutil.rmtree(out)
    out.mkdir()
    assert check_fails(run_netbuild, out) == (f"error: {out}/manifest.json: no such file (is {out} a netbuild "
                                              "output directory?)\n")


def test_self_check_finds_what_the_members_do_not_cover(built_out: Path, tmp_path: Path) -> None:
    """The build's own self-check (same function) on the real initrd with bytes appended, and with
    the member list claiming a store path that is not there."""
    doc = json.loads((built_out / "manifest.json").read_text())
    members = [Member.from_json(m) for m in doc["initrd"]["members"]]
    paths = [p["path"] for p in doc["closure"]["storePaths"]]
    contents = check_initrd(built_out / "initrd", members, expect_store_paths=paths)
    assert contents.store_paths == set(paths)
    longer = tmp_path / "initrd"
    longer.write_bytes((built_out / "initrd").read_bytes() + b"\0\0\0\0")
    with pytest.raises(NetbuildError, match="self-check: initrd: 4 bytes after the last member"):
        check_initrd(longer, members)
    ghost = "/nix/store/" + "1" * 32 + "-ghost"
    with pytest.raises(NetbuildError, match=f"store path {ghost} is in the closure but not in the initrd"):
        check_initrd(built_out / "initrd", members, expect_store_paths=[*paths, ghost])
