"""Which modules the built-in stage 1 loads: resolved on Debian's real modules tree and checked
against kmod's `modprobe --show-depends`; compressed modules, a vermagic mismatch, missing modules,
built-in ones, and a NixOS-style tree of symlinks under a store root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support.kmods import UNPACK, installed_file, module_file, plain_bytes, plain_relpath
from support.qemu import find_kernel, kernel_release

from builder.closure import StoreFS
from builder.errors import NetbuildError
from builder.stage1.modules import KernelModule, ModulesTree, resolve_modules, unresolved_optional
from builder.stage1.needs import NEEDS, STAGE1_MODULES

pytestmark = pytest.mark.kernel  # Debian's kernel, its modules and kmod's tools

HOST = StoreFS(Path("/"))
# ata_generic -> libata -> scsi_mod -> scsi_common: a chain of hard dependencies. Plain paths: the
# host's files may be compressed (Debian 13 ships .ko.xz).
CHAIN = ["kernel/drivers/scsi/scsi_common.ko", "kernel/drivers/scsi/scsi_mod.ko", "kernel/drivers/ata/libata.ko",
         "kernel/drivers/ata/ata_generic.ko"]


@pytest.fixture(scope="module")
def release() -> str:
    return kernel_release(find_kernel())


@pytest.fixture(scope="module")
def debian(release: str) -> ModulesTree:
    return ModulesTree("debian", f"/lib/modules/{release}", HOST)


def relpath_of(release: str, module: str) -> str:
    """The module's file, relative to the modules tree, as kmod finds it (with its real suffix)."""
    return str(module_file(release, module).relative_to(Path("/lib/modules") / release))


def modprobe_order(release: str, *names: str) -> list[str]:
    """kmod's load order for names (relative paths), each module once."""
    out = subprocess.run(["modprobe", "-S", release, "-a", "--show-depends", *names], capture_output=True,
                         text=True, check=True).stdout
    order: list[str] = []
    prefix = f"/lib/modules/{release}/"
    for line in out.splitlines():
        if line.startswith("insmod "):
            path = line.split()[1].removeprefix(prefix)
            if path not in order:
                order.append(path)
    return order


def assert_dependencies_first(modules: list[KernelModule]) -> None:
    loaded: set[str] = set()
    for module in modules:
        missing = [d for d in module.info.depends if d not in loaded]
        assert not missing, f"{module.name} loaded before {missing}"
        loaded.add(module.name)


def test_the_stage1_modules_on_debian(debian: ModulesTree, release: str) -> None:
    modules = resolve_modules(debian, STAGE1_MODULES, release)
    assert [m.relpath for m in modules] == modprobe_order(release, *STAGE1_MODULES)
    assert [m.name for m in modules] == ["loop", "squashfs", "overlay"]


@pytest.mark.parametrize("wanted", ["ata_generic", "lrw", "xt_LOG", "libcrc32c"])
def test_same_order_as_modprobe(debian: ModulesTree, release: str, wanted: str) -> None:
    """Hard dependencies, pre-softdeps found through modules.alias (lrw: ecb; libcrc32c: crc32c means
    crc32c_intel, although the built-in crc32c_generic answers to it too), the module."""
    modules = resolve_modules(debian, (wanted,), release)
    assert [m.relpath for m in modules] == modprobe_order(release, wanted)
    assert_dependencies_first(modules)


def test_a_chain_of_dependencies(debian: ModulesTree, release: str) -> None:
    modules = resolve_modules(debian, ("ata_generic",), release)
    assert [m.relpath for m in modules] == [relpath_of(release, Path(p).name.removesuffix(".ko")) for p in CHAIN]
    assert [m.plain_relpath for m in modules] == CHAIN


@pytest.mark.parametrize("wanted", ["vfio", "cifs", "nfsd"])
def test_same_modules_as_modprobe(debian: ModulesTree, release: str, wanted: str) -> None:
    """Post-softdeps (vfio) and several hard dependencies whose relative order is free (cifs; nfsd,
    whose order kmod itself gives differently on 6.1 and 6.12)."""
    modules = resolve_modules(debian, (wanted,), release)
    assert sorted(m.relpath for m in modules) == sorted(modprobe_order(release, wanted))
    assert_dependencies_first(modules)


def test_every_softdep_line_counts(debian: ModulesTree, release: str) -> None:
    """btrfs declares four softdep= lines; kmod reads only the first, netbuild all of them."""
    mine = {m.plain_relpath for m in resolve_modules(debian, ("btrfs",), release)}
    kmods = {plain_relpath(p) for p in modprobe_order(release, "btrfs")}
    assert kmods < mine
    assert {"kernel/crypto/xxhash_generic.ko"} <= mine - kmods  # softdep pre: xxhash64, an alias


def test_built_in_modules_are_skipped(debian: ModulesTree, release: str) -> None:
    assert "ext4" in debian.builtin and "ext4" not in debian.files
    assert resolve_modules(debian, ("ext4",), release) == []


def test_vermagic_mismatch_is_refused(debian: ModulesTree, release: str) -> None:
    with pytest.raises(NetbuildError) as err:
        resolve_modules(debian, STAGE1_MODULES, "6.1.0-99-other")
    assert str(err.value) == (
        f"debian/{relpath_of(release, 'loop')}: module loop was built for kernel {release} "
        f"(vermagic '{release} SMP preempt mod_unload modversions'), but the kernel to boot is 6.1.0-99-other; "
        "use the modules built with that kernel (--modules DIR)"
    )


def copy_tree(release: str, target: Path, files: dict[str, str], *, builtin: bool = True) -> Path:
    """A lib/modules/<release> tree at target holding some of Debian's modules (plain relative paths),
    each compressed with the tool named ('' for none)."""
    source = Path("/lib/modules") / release
    tools = {"": None, ".xz": ["xz", "--check=crc32", "-c"], ".zst": ["zstd", "-q", "-c"], ".gz": ["gzip", "-n", "-c"]}
    assert set(tools) == {"", *UNPACK}
    for relpath, suffix in files.items():
        dest = target / (relpath + suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        command = tools[suffix]
        data = plain_bytes(installed_file(source, relpath))
        dest.write_bytes(data if command is None else subprocess.run(command, input=data, capture_output=True,
                                                                     check=True).stdout)
    if builtin:
        shutil.copy(source / "modules.builtin", target / "modules.builtin")
    return target


def test_compressed_modules(release: str, tmp_path: Path) -> None:
    suffixes = dict(zip(CHAIN, [".gz", "", ".xz", ".zst"], strict=True))
    tree = ModulesTree("mine", str(copy_tree(release, tmp_path, suffixes)), HOST)
    modules = resolve_modules(tree, ("ata_generic",), release)
    assert [m.relpath for m in modules] == [path + suffixes[path] for path in CHAIN]
    assert [m.plain_relpath for m in modules] == CHAIN
    for module, path in zip(modules, CHAIN, strict=True):
        assert module.elf == plain_bytes(installed_file(Path("/lib/modules") / release, path))


def test_missing_modules_are_refused(release: str, tmp_path: Path) -> None:
    with_list = ModulesTree("listed", str(copy_tree(release, tmp_path / "a", {"kernel/drivers/block/loop.ko": ""})),
                            HOST)
    with pytest.raises(NetbuildError, match=r"^listed: the squashfs layout's stage 1 needs squashfs, but there is no "
                                            r"such module and modules.builtin does not list it$"):
        resolve_modules(with_list, STAGE1_MODULES, release)
    bare = ModulesTree("bare", str(copy_tree(release, tmp_path / "b", {CHAIN[3]: ""}, builtin=False)), HOST)
    with pytest.raises(NetbuildError, match=r"^bare: module ata_generic depends on libata, but there is no such "
                                            r"module and the tree has no modules.builtin to say it is built in$"):
        resolve_modules(bare, ("ata_generic",), release)


def test_updates_directory_wins(release: str, tmp_path: Path) -> None:
    copy_tree(release, tmp_path, {"kernel/drivers/block/loop.ko": ""})
    (tmp_path / "updates").mkdir()
    shutil.copy(tmp_path / "kernel/drivers/block/loop.ko", tmp_path / "updates/loop.ko")
    tree = ModulesTree("t", str(tmp_path), HOST)
    assert tree.files["loop"] == "updates/loop.ko"


def test_nixos_style_tree_of_store_symlinks_under_a_store_root(release: str, tmp_path: Path) -> None:
    """NixOS's kernel-modules is a buildEnv: links into the kernel's own store path. Under --store-root
    they must be followed below the root, never on the host (where /nix/store/… does not exist)."""
    store = tmp_path / "root"
    linux = f"/nix/store/{'a' * 32}-linux-{release}-modules"
    env = f"/nix/store/{'b' * 32}-kernel-modules"
    real = store / linux.lstrip("/") / "lib/modules" / release
    copy_tree(release, real, {"kernel/drivers/block/loop.ko": ".xz", "kernel/fs/squashfs/squashfs.ko": "",
                              "kernel/fs/overlayfs/overlay.ko": ""})
    tree_dir = store / env.lstrip("/") / "lib/modules" / release
    tree_dir.mkdir(parents=True)
    (tree_dir / "kernel").symlink_to(f"{linux}/lib/modules/{release}/kernel")  # absolute, into the store
    (tree_dir / "modules.builtin").symlink_to(f"{linux}/lib/modules/{release}/modules.builtin")
    (tree_dir / "build").symlink_to("/nonexistent/build")  # skipped, as depmod does
    tree = ModulesTree(f"{env}/lib/modules/{release}", f"{env}/lib/modules/{release}", StoreFS(store))
    assert tree.has_builtin_list
    modules = resolve_modules(tree, STAGE1_MODULES, release)
    assert [m.relpath for m in modules] == ["kernel/drivers/block/loop.ko.xz", "kernel/fs/squashfs/squashfs.ko",
                                            "kernel/fs/overlayfs/overlay.ko"]


def test_the_vm_disk_modules_on_debian(debian: ModulesTree, release: str) -> None:
    """vm-disk's required modules, the ones kmod loads (dependencies first; independent ones may come in
    another order than modprobe's); of its optional ones, what the cloud kernel lacks
    (9p: `# CONFIG_NET_9P is not set`) is named, not shipped, and ext4, built in, is neither."""
    needs = NEEDS["vm-disk"]
    modules = resolve_modules(debian, needs.required, release, optional=needs.optional, layout="vm-disk")
    assert sorted(m.relpath for m in modules) == sorted(modprobe_order(release, *needs.required))
    assert_dependencies_first(modules)
    assert unresolved_optional(debian, needs.optional) == ["9p", "9pnet_virtio"]
    with pytest.raises(NetbuildError, match=r"^debian: the vm-9p layout's stage 1 needs 9p, but there is no such "
                                            "module and modules.builtin does not list it$"):
        resolve_modules(debian, NEEDS["vm-9p"].required, release, layout="vm-9p")
