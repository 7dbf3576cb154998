"""The squashfs layout (--recipe netboot-squashfs): real Nix builds the fixture system in the variants
the layout cares about, netbuild packs it, QEMU boots it, and the guest reports what it saw.

- the toplevel's own stage 1 (a NixOS-style one the fixture packs with GNU cpio and zstd, not with
  netbuild) is copied byte for byte and boots the system;
- without one, netbuild's built-in stage 1 (BusyBox and modules from the closure) boots it;
- in both the guest's /nix/store digest equals the host's, and /nix/store is a writable overlay;
- the image, read back with GNU cpio and unsquashfs, holds exactly the closure, NAR for NAR;
- two builds under different jobs, umask, time zone and directory are byte-identical;
- every refusal is one `error:` line, before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RunNetbuild, SystemClosure
from support.closure import paths
from support.digest import digest_of_lines, explain_mismatch, store_lines
from support.kmods import installed_file, plain_bytes
from support.qemu import boot, kernel_release, parse_digest, parse_entries
from support.squashfs import (
    RECIPE,
    FixtureClosure,
    extract_image,
    manifest_members,
    member_bytes,
    nar_sha256,
    system_variant,
)

from builder.closure import Closure, StoreFS, StorePath
from builder.errors import NetbuildError
from builder.formats.nar import hash_path
from builder.writers.squashfs import parse_squashfs_compression, write_image

pytestmark = [pytest.mark.boot, pytest.mark.nix]

REPO = Path(__file__).resolve().parents[2]
OVERLAY_OK = "NETBUILD-OVERLAY-OK"
FIXTURE_STAGE1 = "NETBUILD-FIXTURE-STAGE1"
BUILTIN_STAGE1 = "netbuild stage 1: the store is mounted; switching to"


@pytest.fixture(scope="module")
def own_stage1_system(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    """The fixture system with a NixOS-style stage 1 as its `initrd` and the overlay-checking init."""
    return system_variant(kernel_image, tmp_path_factory.mktemp("own-stage1"), withStage1=True, overlayCheck=True)


@pytest.fixture(scope="module")
def modules_system(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> FixtureClosure:
    """The fixture system without `initrd` but with `kernel-modules`: netbuild's built-in stage 1."""
    return system_variant(kernel_image, tmp_path_factory.mktemp("modules"), withModules=True, overlayCheck=True)


@pytest.fixture(scope="module")
def own_stage1_out(
    own_stage1_system: FixtureClosure, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("own-stage1-out") / "out"
    run_netbuild(str(own_stage1_system.closure_json), "-o", str(out), "--recipe", RECIPE)
    return out


@pytest.fixture(scope="module")
def builtin_out(
    modules_system: FixtureClosure, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("builtin-out") / "out"
    run_netbuild(str(modules_system.closure_json), "-o", str(out), "--recipe", RECIPE)
    return out


def boot_out(out: Path, expect: str = OVERLAY_OK) -> str:
    return boot(out / "bzImage", out / "initrd", (out / "kernel-params").read_text().strip(), expect=expect)


def assert_guest_store_is_closure(console: str, closure: FixtureClosure, out: Path) -> None:
    expected = store_lines(closure.paths, (out / "registration").read_bytes())
    if parse_digest(console) != digest_of_lines(expected):
        raise AssertionError("the guest's /nix/store differs from the closure plus registration:\n"
                             + explain_mismatch(parse_entries(console), expected))


def test_kernel_params_name_init_for_the_stage_1(own_stage1_out: Path, own_stage1_system: FixtureClosure) -> None:
    params = (own_stage1_out / "kernel-params").read_text().split()
    toplevel_params = (Path(own_stage1_system.root) / "kernel-params").read_text().split()
    assert params == [f"init={own_stage1_system.root}/init", *toplevel_params]


def test_toplevel_stage1_is_copied_byte_for_byte(own_stage1_out: Path, own_stage1_system: FixtureClosure) -> None:
    own = (Path(own_stage1_system.root) / "initrd").read_bytes()
    initrd = (own_stage1_out / "initrd").read_bytes()
    assert initrd[: len(own)] == own
    members = manifest_members(own_stage1_out)
    assert [m["role"] for m in members] == ["stage1", "squashfs"]
    stage1, image = members
    assert (stage1["offset"], stage1["size"], stage1["compression"]) == (0, len(own), "zstd")
    # GNU cpio padded the fixture's archive to 512-byte blocks: the plain stream says so.
    plain = subprocess.run(["zstd", "-dc"], input=own, capture_output=True, check=True).stdout
    assert stage1["uncompressedSize"] == len(plain) and len(plain) % 512 == 0
    assert stage1["uncompressedSha256"] == hashlib.sha256(plain).hexdigest()
    # The image's archive starts 4-aligned right after, with only NULs between, and is not compressed.
    assert image["offset"] % 4 == 0 and 0 <= image["offset"] - len(own) < 4
    assert initrd[len(own) : image["offset"]].strip(b"\0") == b""
    assert image["compression"] == "none" and image["offset"] + image["size"] == len(initrd)


def test_boots_with_the_toplevels_own_stage1(own_stage1_out: Path, own_stage1_system: FixtureClosure) -> None:
    console = boot_out(own_stage1_out)
    assert FIXTURE_STAGE1 in console, "the toplevel's own stage 1 did not run"
    assert BUILTIN_STAGE1 not in console
    assert_guest_store_is_closure(console, own_stage1_system, own_stage1_out)


def test_boots_with_the_builtin_stage1(builtin_out: Path, modules_system: FixtureClosure) -> None:
    console = boot_out(builtin_out)
    assert f"{BUILTIN_STAGE1} {modules_system.root}/init" in console
    assert FIXTURE_STAGE1 not in console
    assert_guest_store_is_closure(console, modules_system, builtin_out)


def test_builtin_stage1_holds_busybox_modules_and_init(
    builtin_out: Path, modules_system: FixtureClosure, kernel_image: Path, tmp_path: Path
) -> None:
    """Unpacked with the zstd and GNU cpio tools: the closure's BusyBox, the toplevel's modules (plain
    .ko, in load order in /init) and nothing else."""
    stage1 = manifest_members(builtin_out)[0]
    assert stage1["role"] == "stage1" and stage1["compression"] == "zstd"
    plain = subprocess.run(["zstd", "-dc"], input=member_bytes(builtin_out, stage1), capture_output=True,
                           check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet", "--nonmatching", "dev/console"], input=plain, cwd=tmp_path, check=True)
    busybox = Path(modules_system.path_named("-busybox")) / "bin" / "busybox"
    assert (tmp_path / "bin" / "busybox").read_bytes() == busybox.read_bytes()
    release = kernel_release(kernel_image)
    tree = Path(modules_system.path_named(f"-kernel-modules-{release}")) / "lib" / "modules" / release
    shipped = sorted(str(p.relative_to(tmp_path / "lib/modules" / release))
                     for p in (tmp_path / "lib/modules" / release).rglob("*.ko"))
    expected = ["kernel/drivers/block/loop.ko", "kernel/fs/overlayfs/overlay.ko", "kernel/fs/squashfs/squashfs.ko"]
    assert shipped == expected
    for module in expected:  # the toplevel's may be compressed (Debian 13's are .ko.xz): shipped plain
        assert (tmp_path / "lib/modules" / release / module).read_bytes() == plain_bytes(installed_file(tree, module))
    init = (tmp_path / "init").read_text()
    assert "for module in kernel/drivers/block/loop.ko kernel/fs/squashfs/squashfs.ko kernel/fs/overlayfs/overlay.ko;" \
        in init
    assert "@modules@" not in init and "@release@" not in init
    assert os.access(tmp_path / "init", os.X_OK)


def test_image_holds_exactly_the_closure(builtin_out: Path, modules_system: FixtureClosure, tmp_path: Path) -> None:
    """GNU cpio takes the image out of the initrd, unsquashfs unpacks it; every store path's NAR
    (nix-store --dump) equals the store's, and all is owned by root with mtime 1."""
    image = extract_image(builtin_out, tmp_path / "cpio")
    root = tmp_path / "root"
    subprocess.run(["unsquashfs", "-no-progress", "-q", "-d", str(root), str(image)], check=True,
                   stdout=subprocess.DEVNULL)
    basenames = sorted(os.listdir(root))
    assert basenames == sorted([Path(p).name for p in modules_system.paths] + ["nix-path-registration"])
    for path in modules_system.paths:
        assert nar_sha256(root / Path(path).name) == nar_sha256(Path(path)), path
    assert (root / "nix-path-registration").read_bytes() == (builtin_out / "registration").read_bytes()
    listing = subprocess.run(["unsquashfs", "-lln", "-no-progress", str(image)], capture_output=True, text=True,
                             check=True, env={**os.environ, "TZ": "UTC"}).stdout.splitlines()
    entries = [line for line in listing if line[:1] in "-dl"]
    assert len(entries) > len(modules_system.paths)
    for line in entries:
        owner, date, clock = line.split()[1], line.split()[3], line.split()[4]
        assert (owner, date, clock) == ("0/0", "1970-01-01", "00:00"), line


def _build(closure: Path, out: Path, *, cwd: Path, umask: int, tz: str, jobs: int) -> None:
    env = {**os.environ, "TZ": tz, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "builder", str(closure), "-o", str(out), "--recipe", RECIPE,
                           "-j", str(jobs)], cwd=cwd, env=env, capture_output=True,
                          preexec_fn=lambda: os.umask(umask), timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()


def test_two_builds_are_byte_identical(modules_system: FixtureClosure, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "out", tmp_path / "b" / "elsewhere" / "out"
    for out in (first, second):
        out.parent.mkdir(parents=True)
    started = time.monotonic()
    _build(modules_system.closure_json, first, cwd=first.parent, umask=0o022, tz="UTC", jobs=1)
    seconds = time.monotonic() - started
    _build(modules_system.closure_json, second, cwd=second.parent, umask=0o077, tz="Asia/Kolkata", jobs=2)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    print(f"squashfs layout build of the fixture: {seconds:.1f} s")


def test_builtin_stage1_fails_loudly_without_the_image(builtin_out: Path, tmp_path: Path) -> None:
    """Booted with its stage 1 alone (the image's archive cut off), the built-in stage 1 says what is
    missing and exits, and the kernel's panic=-1 ends the boot instead of hanging."""
    stage1 = manifest_members(builtin_out)[0]
    initrd = tmp_path / "stage1-only"
    initrd.write_bytes(member_bytes(builtin_out, stage1))
    console = boot(builtin_out / "bzImage", initrd, (builtin_out / "kernel-params").read_text().strip(),
                   expect="netbuild stage 1: error: no /nix-store.squashfs in the initrd")
    assert "Kernel panic - not syncing: Attempted to kill init" in console


def recipe_file(directory: Path, stage1: str) -> Path:
    text = (REPO / "recipes" / f"{RECIPE}.toml").read_text().replace('stage1 = "auto"', f'stage1 = "{stage1}"')
    assert f'stage1 = "{stage1}"' in text
    path = directory / f"stage1-{stage1}.toml"
    path.write_text(text)
    return path


def test_recipe_can_insist_on_the_builtin_stage1(
    own_stage1_system: FixtureClosure, kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    """stage1 = "builtin" ignores the toplevel's initrd and takes --busybox and --modules."""
    out = tmp_path / "out"
    run_netbuild(str(own_stage1_system.closure_json), "-o", str(out), "--recipe",
                 str(recipe_file(tmp_path, "builtin")), "--busybox", "/bin/busybox", "--modules",
                 str(Path("/lib/modules") / kernel_release(kernel_image)))
    own = (Path(own_stage1_system.root) / "initrd").read_bytes()
    stage1 = manifest_members(out)[0]
    assert member_bytes(out, stage1) != own[: stage1["size"]]
    plain = subprocess.run(["zstd", "-dc"], input=member_bytes(out, stage1), capture_output=True, check=True).stdout
    assert b"netbuild's built-in stage 1" in plain


# --- Refusals: one error line, nothing written ---------------------------------------------------


def test_recipe_insisting_on_the_toplevels_stage1_needs_one(
    modules_system: FixtureClosure, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    proc = run_netbuild(str(modules_system.closure_json), "-o", str(tmp_path / "out"), "--recipe",
                        str(recipe_file(tmp_path, "toplevel")), check=False)
    assert proc.returncode != 0
    assert proc.stderr.decode() == (f'error: recipe stage1-toplevel: stage1 = "toplevel", but {modules_system.root} '
                                    "has no `initrd`\n")


def refuse(run_netbuild: RunNetbuild, out: Path, *args: str) -> str:
    proc = run_netbuild(*args, "-o", str(out), "--recipe", RECIPE, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0, f"netbuild {args} succeeded"
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert not out.exists() and not [p for p in os.listdir(out.parent) if p.startswith(".out")]
    return stderr


def test_refuses_a_toplevel_initrd_it_cannot_read(
    kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    placeholder = system_variant(kernel_image, tmp_path / "closure", withInitrd=True)
    stderr = refuse(run_netbuild, tmp_path / "out", str(placeholder.closure_json))
    assert f"the toplevel's initrd {placeholder.root}/initrd: archive at offset 0: neither a cpio archive" in stderr


def test_refuses_builtin_options_when_the_toplevel_has_a_stage1(
    own_stage1_system: FixtureClosure, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    stderr = refuse(run_netbuild, tmp_path / "out", str(own_stage1_system.closure_json), "--busybox", "/bin/busybox")
    assert "--busybox applies only to netbuild's built-in stage 1, but the toplevel's own initrd" in stderr
    assert 'stage1 = "builtin"' in stderr


def test_refuses_builtin_stage1_without_modules(
    system_closure: SystemClosure, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    stderr = refuse(run_netbuild, tmp_path / "out", str(system_closure.closure_json))
    assert "the toplevel has no kernel-modules; pass --modules DIR" in stderr


def test_refuses_a_dynamic_busybox(
    modules_system: FixtureClosure, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    stderr = refuse(run_netbuild, tmp_path / "out", str(modules_system.closure_json), "--busybox", "/bin/ls")
    assert "--busybox /bin/ls: the stage 1 needs a static x86_64 BusyBox, but it is dynamically linked" in stderr


def test_refuses_modules_built_for_another_kernel(
    modules_system: FixtureClosure, kernel_image: Path, run_netbuild: RunNetbuild, tmp_path: Path
) -> None:
    """A copy of the kernel whose version string names another release (one digit changed, as a
    kernel rebuilt with another ABI number would): the toplevel's modules no longer fit it."""
    release = kernel_release(kernel_image)
    other = release.replace(release[release.index("-") + 1], "9", 1) if "-" in release else release + "9"
    assert other != release and len(other) == len(release)
    data = kernel_image.read_bytes()
    at = data.index(release.encode() + b" (")
    patched = tmp_path / "bzImage"
    patched.write_bytes(data[:at] + other.encode() + data[at + len(release):])
    assert kernel_release(patched) == other
    modules = tmp_path / "modules"
    (modules / "lib" / "modules").mkdir(parents=True)
    (modules / "lib" / "modules" / other).symlink_to(Path("/lib/modules") / release)
    stderr = refuse(run_netbuild, tmp_path / "out", str(modules_system.closure_json), "--kernel", str(patched),
                    "--modules", str(modules))
    loop = installed_file(Path("/lib/modules") / release, "kernel/drivers/block/loop.ko")
    assert f"{loop.relative_to(Path('/lib/modules') / release)}: module loop was built for kernel {release}" in stderr
    assert f"but the kernel to boot is {other}" in stderr


# --- The image writer on a hand-made store (no Nix, no QEMU) ---------------------------------------


def hand_made_store(root: Path) -> Closure:
    """Entries a tar header must work hard for: names past 100 bytes, a link target past 100 bytes,
    a name that is not UTF-8, an empty directory, and modes that are not the store's."""
    a = f"/nix/store/{'a' * 32}-odd-names"
    b = f"/nix/store/{'b' * 32}-single-file"
    top = root / a.lstrip("/")
    (top / "empty-dir").mkdir(parents=True)
    (top / ("n" * 150)).write_bytes(b"long name\n")
    (top / "bin").mkdir()
    (top / "bin" / "run").write_bytes(b"#!/bin/sh\n")
    (top / "bin" / "run").chmod(0o700)
    (top / "private").write_bytes(b"0600 on disk, 0444 in the image\n")
    (top / "private").chmod(0o600)
    os.symlink(b"x" * 180, os.fsencode(top / "long-link"))
    with open(os.fsencode(top) + b"/latin1-\xe9t\xe9", "wb") as f:
        f.write(b"not UTF-8\n")
    (root / b.lstrip("/")).write_bytes(bytes(range(256)) * 4097)
    return Closure([StorePath(p, *hash_path(root / p.lstrip("/")), ()) for p in (a, b)], source="test")


def test_image_of_a_hand_made_store(tmp_path: Path) -> None:
    closure = hand_made_store(tmp_path / "store")
    images = []
    for jobs in (1, 2):
        image = tmp_path / f"image-{jobs}"
        made = write_image(image, closure=closure, store=StoreFS(tmp_path / "store"),
                           compression=parse_squashfs_compression("xz"), jobs=jobs)
        images.append(image.read_bytes())
    assert images[0] == images[1], "the image depends on the number of processors"
    assert [(v.path, v.nar_hash, v.nar_size) for v in made.verified] == \
        [(sp.path, sp.nar_hash, sp.nar_size) for sp in closure]
    root = tmp_path / "unpacked"
    subprocess.run(["unsquashfs", "-no-progress", "-q", "-d", str(root), str(tmp_path / "image-1")], check=True,
                   stdout=subprocess.DEVNULL)
    for sp in closure:
        assert nar_sha256(root / sp.basename) == nar_sha256(tmp_path / "store" / sp.path.lstrip("/")), sp.path
    assert (root / "nix-path-registration").read_bytes() == made.registration
    assert stat.S_IMODE((root / paths(closure)[0].split("/")[-1] / "private").stat().st_mode) == 0o444
    assert stat.S_IMODE((root / paths(closure)[0].split("/")[-1] / "bin" / "run").stat().st_mode) == 0o555


def test_image_writer_refusals(tmp_path: Path) -> None:
    closure = hand_made_store(tmp_path / "store")
    first = paths(closure)[0]
    wrong = Closure([StorePath(first, b"\0" * 32, closure[first].nar_size, ()), closure[paths(closure)[1]]],
                    source="test")
    with pytest.raises(NetbuildError, match=rf"^{first}: NAR hash mismatch: the closure says sha256:0+, the files"):
        write_image(tmp_path / "image", closure=wrong, store=StoreFS(tmp_path / "store"),
                    compression=parse_squashfs_compression("zstd"), jobs=1)
    with pytest.raises(NetbuildError, match=rf"^mksquashfs failed writing {tmp_path}/nowhere/image \(exit status 1, "
                                            r"after \d of 2 store paths\): Could not create destination file"):
        write_image(tmp_path / "nowhere" / "image", closure=closure, store=StoreFS(tmp_path / "store"),
                    compression=parse_squashfs_compression("zstd"), jobs=1)
