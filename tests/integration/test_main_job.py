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
import pytest

from builder.formats.nar import hash_path
from builder.formats.nixhash import parse_sha256

pytestmark = pytest.mark.nix

EXPECTED_FILES = {
    "bzImage",
    "initrd",
    "kernel-params",
    "netboot.ipxe",
    "run-qemu",
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
    cwd: Path, args: list[str], *, umask: int, tz: str, cache: Path, stdin: bytes | None = None, lang: str = "C.UTF-8"
) -> None:
    env = {**os.environ, "TZ": tz, "XDG_CACHE_HOME": str(cache), "LC_ALL": lang,
           "PYTHONPATH": str(Path(__file__).parents[2])}
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
    # Served to other machines over HTTP/TFTP: readable by all, whatever the builder's umask.
    assert stat.S_IMODE(built_out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in built_out.iterdir()}
    assert modes == {name: 0o755 if name == "run-qemu" else 0o644 for name in EXPECTED_FILES}
    params = (built_out / "kernel-params").read_text()
    assert params.startswith(f"init={system_closure.toplevel}/init ")
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
        ("a", 0o022, "UTC", "1", "C.UTF-8"),
        ("b/deeper", 0o077, "Pacific/Chatham", "4", "C"),
    ]
    outs = []
    for name, umask, tz, jobs, lang in runs:
        cwd = tmp_path / name
        cwd.mkdir(parents=True)
        closure = cwd / "in.json"
        shutil.copy(system_closure.closure_json, closure)
        netbuild_in(
            cwd, [str(closure), "-o", f"out-{jobs}", "--jobs", jobs], umask=umask, tz=tz, cache=cwd / "cache", lang=lang
        )
        outs.append(tree(cwd / f"out-{jobs}"))
    assert outs[0] == outs[1]


def test_store_root_reads_a_copied_store(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    root = system_closure.copy_store(tmp_path / "elsewhere")
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
    # GNU cpio stops at an archive's trailer: hand it the archives one by one, as the kernel reads them.
    data = plain.read_bytes()
    archives = _newc_archives(data)
    assert len(archives) >= 3  # skeleton, store, registration
    for start, end, _entries in archives:
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=data[start:end], cwd=dest,
                       check=True)
    _assert_tree_matches_store(dest, system_closure)
    assert (dest / "nix/store/nix-path-registration").read_bytes() == (
        built_out / "registration"
    ).read_bytes()
    assert stat.S_ISCHR((dest / "dev/console").lstat().st_mode)
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data[: archives[0][1]], capture_output=True, check=True)
    assert b"dev/console" in listing.stdout


def test_libarchive_reads_back_the_store(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "libarchive"
    dest.mkdir()
    cwd = os.getcwd()
    os.chdir(dest)
    # libarchive decompresses each zstd member itself (an independent decompressor too), found
    # where the manifest says the members are.
    data = (built_out / "initrd").read_bytes()
    members = json.loads((built_out / "manifest.json").read_text())["initrd"]["members"]
    assert sum(m["size"] for m in members) == len(data)
    entries = {}
    try:
        for member in members:
            piece = data[member["offset"] : member["offset"] + member["size"]]
            libarchive.extract_memory(piece)
            with libarchive.memory_reader(piece) as archive:
                entries.update({e.pathname: e for e in archive})
    finally:
        os.chdir(cwd)
    _assert_tree_matches_store(dest, system_closure)
    toplevel = system_closure.toplevel.lstrip("/")
    assert entries[f"{toplevel}/init"].mode & 0o777 == 0o555
    assert entries[f"{toplevel}/kernel-params"].mode & 0o777 == 0o444
    assert all(e.uid == 0 and e.gid == 0 and e.mtime == 1 for e in entries.values())


def _newc_archives(plain: bytes) -> list[tuple[int, int, list[tuple[str, dict[str, int]]]]]:
    """(start, end, entries) of each newc archive in a concatenation of them: a minimal header walk
    written here, independent of builder.formats.cpio."""
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
             "rdevmajor", "rdevminor", "namesize", "check")
    archives, entries, start, offset = [], [], 0, 0
    while offset < len(plain):
        assert plain[offset:offset + 6] == b"070701", f"bad magic at {offset}"
        fields = {n: int(plain[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i, n in enumerate(names)}
        name = plain[offset + 110: offset + 110 + fields["namesize"] - 1].decode("utf-8", "surrogateescape")
        offset = (offset + 110 + fields["namesize"] + 3) & ~3
        offset = (offset + fields["filesize"] + 3) & ~3
        if name == "TRAILER!!!":
            archives.append((start, offset, entries))
            entries, start = [], offset
        else:
            entries.append((name, fields))
    assert not entries, "entries after the last trailer"
    return archives


def test_archive_layout_is_as_specified(tmp_path: Path, system_closure, built_out: Path) -> None:  # type: ignore[no-untyped-def]
    archives = _newc_archives(_plain_initrd(built_out, tmp_path).read_bytes())
    for _start, _end, archive in archives:  # each archive stands alone: inodes numbered from 1, in order
        assert [f["ino"] for _, f in archive] == list(range(1, len(archive) + 1))
    entries = [entry for _start, _end, archive in archives for entry in archive]
    assert all(f["nlink"] == 1 and f["uid"] == 0 and f["gid"] == 0 and f["mtime"] == 1 for _, f in entries)
    seen: set[str] = set()
    for name, _fields in entries:  # parents before children: the kernel creates no missing directories
        parent = name.rpartition("/")[0]
        assert not parent or parent in seen, f"{name} comes before its parent"
        seen.add(name)
    store_roots = [n for n, _ in entries if n.count("/") == 2 and n.startswith("nix/store/")]
    # Store paths in path order; the registration last, as it is known only once all are hashed.
    assert store_roots[-1] == "nix/store/nix-path-registration" and store_roots[:-1] == sorted(store_roots[:-1])
    assert store_roots[:-1] == [p.lstrip("/") for p in system_closure.paths]
    for name, fields in entries:
        if not name.startswith("nix/store/") or name == "nix/store/nix-path-registration":
            continue
        host = os.lstat("/" + name)
        kind = stat.S_IFMT(host.st_mode)
        assert stat.S_IFMT(fields["mode"]) == kind, name
        expected = {stat.S_IFDIR: 0o555, stat.S_IFLNK: 0o777}.get(kind, 0o555 if host.st_mode & 0o100 else 0o444)
        assert stat.S_IMODE(fields["mode"]) == expected == stat.S_IMODE(host.st_mode), name
        if kind == stat.S_IFREG:
            assert fields["filesize"] == host.st_size, name
