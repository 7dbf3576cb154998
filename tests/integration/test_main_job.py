"""The main job on a real Nix closure: every input form gives the same OUT, OUT is reproducible
whatever the directory, umask, time zone, cache or job count, and the archive reads back with
GNU cpio and libarchive exactly as the store holds it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import libarchive

from builder.formats.nar import hash_path
from builder.formats.nixhash import parse_sha256

EXPECTED_FILES = {
    "bzImage",
    "initrd",
    "kernel-params",
    "netboot.ipxe",
    "registration",
    "store-paths",
    "total-nar-size",
    "manifest.json",
    "SHA256SUMS",
}


def tree(directory: Path) -> dict[str, tuple[int, bytes]]:
    """name → (mode, bytes) of every file in an OUT directory."""
    return {p.name: (stat.S_IMODE(p.stat().st_mode), p.read_bytes()) for p in sorted(directory.iterdir())}


def netbuild_in(
    cwd: Path, args: list[str], *, umask: int, tz: str, cache: Path, stdin: bytes | None = None
) -> None:
    env = {**os.environ, "TZ": tz, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "builder", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=600,
        preexec_fn=lambda: os.umask(umask),
    )
    assert proc.returncode == 0, proc.stderr.decode()


def test_out_holds_the_expected_files(built_out: Path, system_closure) -> None:  # type: ignore[no-untyped-def]
    assert {p.name for p in built_out.iterdir()} == EXPECTED_FILES
    params = (built_out / "kernel-params").read_text()
    assert params.startswith(f"rdinit={system_closure.toplevel}/init ")
    assert "console=ttyS0" in params  # from the toplevel's kernel-params
    manifest = json.loads((built_out / "manifest.json").read_text())
    assert [p["path"] for p in manifest["closure"]["storePaths"]] == system_closure.paths
    for name in EXPECTED_FILES - {"manifest.json", "SHA256SUMS"}:
        assert manifest["artifacts"][name]["size"] == (built_out / name).stat().st_size
    ipxe = (built_out / "netboot.ipxe").read_text()
    assert ipxe.startswith("#!ipxe\n")
    assert f"kernel bzImage initrd=initrd {params.strip()} ${{cmdline}}\n" in ipxe
    assert "\ninitrd initrd\n" in ipxe and ipxe.endswith("boot\n")


def test_all_input_forms_and_stdin_give_the_same_out(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    reference = tree(built_out)
    cache = tmp_path / "cache"
    for form in (system_closure.object_json, system_closure.attrs_json):
        out = tmp_path / form.stem
        netbuild_in(tmp_path, [str(form), "-o", str(out)], umask=0o022, tz="UTC", cache=cache)
        assert tree(out) == reference, f"{form.name} gave a different OUT"
    out = tmp_path / "stdin"
    netbuild_in(
        tmp_path,
        ["-", "-o", str(out)],
        umask=0o022,
        tz="UTC",
        cache=cache,
        stdin=system_closure.closure_json.read_bytes(),
    )
    assert tree(out) == reference


def test_missing_hashes_are_computed_like_nix(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    bare = [{"path": e["path"], "references": e["references"]} for e in system_closure.path_info]
    closure = tmp_path / "bare.json"
    closure.write_text(json.dumps(bare))
    out = tmp_path / "out"
    netbuild_in(tmp_path, [str(closure), "-o", str(out)], umask=0o022, tz="UTC", cache=tmp_path / "c")
    assert tree(out) == tree(built_out)


def test_reproducible_across_directory_umask_tz_cache_and_jobs(tmp_path: Path, system_closure) -> None:  # type: ignore[no-untyped-def]
    runs = [
        ("a", 0o022, "UTC", "1"),
        ("b/deeper", 0o077, "Pacific/Chatham", "4"),
    ]
    outs = []
    for name, umask, tz, jobs in runs:
        cwd = tmp_path / name
        cwd.mkdir(parents=True)
        closure = cwd / "in.json"
        shutil.copy(system_closure.closure_json, closure)
        netbuild_in(
            cwd, [str(closure), "-o", f"out-{jobs}", "--jobs", jobs], umask=umask, tz=tz, cache=cwd / "cache"
        )
        outs.append(tree(cwd / f"out-{jobs}"))
    assert outs[0] == outs[1]


def test_store_root_reads_a_copied_store(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "elsewhere"
    (root / "nix" / "store").mkdir(parents=True)
    for path in system_closure.paths:
        subprocess.run(["cp", "-a", path, str(root / path.lstrip("/"))], check=True)
    out = tmp_path / "out"
    netbuild_in(
        tmp_path,
        [str(system_closure.closure_json), "-o", str(out), "--store-root", str(root)],
        umask=0o022,
        tz="UTC",
        cache=tmp_path / "c",
    )
    assert tree(out) == tree(built_out)


def _plain_initrd(out: Path, tmp_path: Path) -> Path:
    plain = tmp_path / "initrd.cpio"
    subprocess.run(["zstd", "-d", "-q", "-f", str(out / "initrd"), "-o", str(plain)], check=True)
    return plain


def _assert_tree_matches_store(extracted: Path, system_closure) -> None:  # type: ignore[no-untyped-def]
    store = extracted / "nix" / "store"
    names = sorted(p.name for p in store.iterdir())
    assert names == sorted(
        [p.removeprefix("/nix/store/") for p in system_closure.paths] + ["nix-path-registration"]
    )
    for entry in system_closure.path_info:
        copy = store / entry["path"].removeprefix("/nix/store/")
        digest, size = hash_path(copy)
        assert (digest, size) == (parse_sha256(entry["narHash"]), entry["narSize"]), entry["path"]
        dump = subprocess.run(["nix-store", "--dump", str(copy)], capture_output=True, check=True).stdout
        real = subprocess.run(["nix-store", "--dump", entry["path"]], capture_output=True, check=True).stdout
        assert dump == real, f"{entry['path']} reads back differently"


def test_gnu_cpio_reads_back_the_store(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    plain = _plain_initrd(built_out, tmp_path)
    dest = tmp_path / "gnu"
    dest.mkdir()
    with open(plain, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], stdin=f, cwd=dest, check=True)
    _assert_tree_matches_store(dest, system_closure)
    assert (dest / "nix/store/nix-path-registration").read_bytes() == (
        built_out / "registration"
    ).read_bytes()
    assert stat.S_ISCHR((dest / "dev/console").lstat().st_mode)
    with open(plain, "rb") as f:
        listing = subprocess.run(["cpio", "-itv", "--quiet"], stdin=f, capture_output=True, check=True)
    assert b"nix/store" in listing.stdout


def test_libarchive_reads_back_the_store(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "libarchive"
    dest.mkdir()
    cwd = os.getcwd()
    os.chdir(dest)
    try:  # libarchive reads the zstd member itself: an independent decompressor too
        libarchive.extract_file(str(built_out / "initrd"))
    finally:
        os.chdir(cwd)
    _assert_tree_matches_store(dest, system_closure)
    with libarchive.file_reader(str(built_out / "initrd")) as archive:
        entries = {e.pathname: e for e in archive}
    toplevel = system_closure.toplevel.lstrip("/")
    assert entries[f"{toplevel}/init"].mode & 0o777 == 0o555
    assert entries[f"{toplevel}/kernel-params"].mode & 0o777 == 0o444
    assert all(e.uid == 0 and e.gid == 0 and e.mtime == 1 for e in entries.values())
