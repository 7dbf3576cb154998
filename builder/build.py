"""The main job: closure + recipe → BootPlan → artifacts in a staging directory → self-check → OUT."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from builder.checks.preflight import ClosureImage, check_cmdline, check_init, check_initrd_size, preflight
from builder.checks.selfcheck import check_kernel
from builder.closure import Closure
from builder.errors import NetbuildError
from builder.layouts import Layout, layout_for
from builder.outcontract import (
    BOOT_SCR,
    DEVICETREE,
    DIRECTORY_MODE,
    INITRD,
    KERNEL_PARAMS,
    MANIFEST,
    NETBOOT_EFI,
    NETBOOT_UKI_IPXE,
    PXELINUX_CFG,
    REGISTRATION,
    RUN_QEMU,
    SHA256SUMS,
    STORE_PATHS,
    TOTAL_NAR_SIZE,
    Digest,
    file_digest,
    kernel_artifact,
    manifest,
    mode_of,
    sections,
    sha256sums,
)
from builder.outdir import check_replaceable, discard, make_staging, publish
from builder.plan import BootPlan, Options, make_plan
from builder.progress import QUIET, Reporter
from builder.recipe import Recipe
from builder.run.memory import BootMemory
from builder.writers import menu, params, runqemu
from builder.writers import registration as reg
from builder.writers.ipxe import uki_script
from builder.writers.members import InitrdResult
from builder.writers.pxelinux import pxelinux_config
from builder.writers.signing import sign
from builder.writers.uboot_script import boot_script_image
from builder.writers.uki import UkiResult, os_release, write_uki


def netbuild_version() -> str:
    try:
        return version("netbuild")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class BuildResult:
    out: Path
    plan: BootPlan
    initrd: InitrdResult
    artifacts: dict[str, Digest]
    warnings: list[str]
    memory: BootMemory


def build(
    closure: Closure,
    recipe: Recipe,
    options: Options,
    out: Path,
    *,
    report: Reporter = QUIET,
    run_preflight: bool = True,
) -> BuildResult:
    """Build OUT from the closure. `run_preflight=False` exists for the tests that prove each
    preflight refusal guards a real boot failure; nothing else should turn it off."""
    check_replaceable(out)  # before planning: a wrong -o should not wait for minutes of work
    plan = make_plan(closure, recipe, options)
    warnings = _preflight(plan) if run_preflight else []
    for warning in warnings:
        report.warn(warning)
    layout = layout_for(plan.recipe.layout)
    prepared = layout.prepare(plan)
    staging = make_staging(out)
    try:
        result = _write_all(plan, layout, prepared, staging, report, warnings)
        publish(staging, out)
    except OSError as e:  # reading the store is reported by the writers; this is the output side
        discard(staging)
        where = f" ({os.fsdecode(e.filename)})" if e.filename is not None else ""
        raise NetbuildError(f"writing {out}{where}: {e.strerror}") from None
    except BaseException:
        discard(staging)
        raise
    return BuildResult(out=out, plan=plan, initrd=result[0], artifacts=result[1], warnings=warnings, memory=result[2])


def _preflight(plan: BootPlan) -> list[str]:
    warnings = preflight(plan)
    if plan.menu is not None:
        # The menu's other entries boot the same kernel and initrd: only their init and command line
        # are theirs to check.
        image = ClosureImage(plan)
        for entry in plan.menu.entries:
            if (entry.init, entry.cmdline) != (plan.init, plan.cmdline):
                other = replace(plan, init=entry.init, cmdline=entry.cmdline)
                check_init(other, image, warnings)
                check_cmdline(other)
    return warnings


UKI_WARN_BYTES = 1 << 30  # firmware loads a UKI into one allocation; many machines fail past 1-2 GiB


def _write_uki(plan: BootPlan, staging: Path, report: Reporter, warnings: list[str]) -> UkiResult:
    """netboot.efi from the kernel and initrd just written (and checked), signed if asked, and
    netboot-uki.ipxe beside it."""
    assert plan.uki is not None
    kernel = staging / kernel_artifact(plan.kernel.header.arch)
    size = kernel.stat().st_size + (staging / INITRD).stat().st_size
    if size > UKI_WARN_BYTES:
        warning = (f"{NETBOOT_EFI} is {size / (1 << 30):.1f} GiB: UEFI firmware loads it whole into one "
                   "allocation, and many machines fail past 1-2 GiB; iPXE (netboot.ipxe) or the squashfs layout "
                   "load less")
        warnings.append(warning)
        report.warn(warning)
    report.log(f"writing {NETBOOT_EFI} (systemd-stub from {plan.uki.stub.origin})")
    result = write_uki(staging / NETBOOT_EFI, stub=plan.uki.stub, kernel=kernel,
                       initrd=staging / INITRD, cmdline=plan.cmdline,
                       osrel=os_release(plan.toplevel, plan.menu.title if plan.menu else _label(plan)),
                       uname=plan.kernel.header.release)
    if plan.uki.signing is not None:
        report.log(f"signing {NETBOOT_EFI} ({plan.uki.signing.subject})")
        sign(staging / NETBOOT_EFI, plan.uki.signing)
    (staging / NETBOOT_UKI_IPXE).write_bytes(uki_script(
        cmdline=plan.cmdline, base_url=plan.base_url, toplevel=plan.toplevel,
        description=f"netbuild {netbuild_version()} — recipe {plan.recipe.name}"))
    return result


def _uboot_files(plan: BootPlan, kernel: str) -> dict[str, bytes]:
    """pxelinux.cfg/default and boot.scr.uimg, which boot OUT from U-Boot over TFTP."""
    description = f"netbuild {netbuild_version()} — recipe {plan.recipe.name}"
    label = plan.menu.title if plan.menu else _label(plan)
    return {
        PXELINUX_CFG: pxelinux_config(kernel=kernel, initrd=INITRD, cmdline=plan.cmdline,
                                      fdt=DEVICETREE if plan.dtb is not None else None, label=label,
                                      description=description),
        BOOT_SCR: boot_script_image(arch=plan.kernel.arch, toplevel=plan.toplevel, description=description),
    }


def _label(plan: BootPlan) -> str:
    return plan.toplevel.rsplit("/", 1)[-1][33:] if plan.toplevel else f"{plan.init.rsplit('/', 1)[-1]} (netbuild)"


def _write_all(
    plan: BootPlan, layout: Layout[Any], prepared: object, staging: Path, report: Reporter, warnings: list[str]
) -> tuple[InitrdResult, dict[str, Digest], BootMemory]:
    initrd, initrd_digest = layout.write_checked(staging / INITRD, plan, prepared, report)
    for warning in check_initrd_size(plan, (staging / INITRD).stat().st_size):
        warnings.append(warning)
        report.warn(warning)
    kernel = kernel_artifact(plan.kernel.header.arch)  # bzImage, or an arm64 Image
    plan.kernel.copy_to(staging / kernel)
    memory = BootMemory(plan.kernel.header.init_size, initrd_digest[0], layout.rootfs_bytes(plan, initrd))
    files = {
        REGISTRATION: initrd.registration,  # the bytes the initrd holds, made once
        STORE_PATHS: reg.store_paths(initrd.verified),
        TOTAL_NAR_SIZE: reg.total_nar_size(initrd.verified),
        KERNEL_PARAMS: params.kernel_params(plan.cmdline),
        **menu.netboot_scripts(
            cmdline=plan.cmdline,
            base_url=plan.base_url,
            toplevel=plan.toplevel,
            description=f"netbuild {netbuild_version()} — recipe {plan.recipe.name}",
            menu=plan.menu,
        ),
        RUN_QEMU: runqemu.run_qemu_script(
            toplevel=plan.toplevel,
            description=f"netbuild {netbuild_version()} — recipe {plan.recipe.name}",
            boot_mib=memory.boot_mib,
            layout=plan.recipe.layout,
            arch=plan.kernel.arch,
        ),
    }
    if plan.kernel.arch.uboot_files:
        files.update(_uboot_files(plan, kernel))
    if plan.dtb is not None:
        files[DEVICETREE] = plan.dtb.file.read_bytes()
    for name, data in files.items():
        (staging / name).parent.mkdir(exist_ok=True)  # pxelinux.cfg/
        (staging / name).write_bytes(data)

    report.log("checking what was written")
    check_kernel(staging / kernel)
    uki = _write_uki(plan, staging, report, warnings) if plan.uki is not None else None
    artifacts = {name: file_digest(staging / name) for name in [kernel, *files]}
    artifacts[INITRD] = initrd_digest
    artifacts.update(initrd.companions)  # what the layout wrote beside the initrd (vm-disk's store.img)
    if uki is not None:
        for name in (NETBOOT_EFI, NETBOOT_UKI_IPXE):
            artifacts[name] = file_digest(staging / name)
    manifest_bytes = manifest(
        version=netbuild_version(),
        sections=sections(plan, initrd, memory, uki, kernel_sha256=artifacts[kernel][1]),
        closure=initrd.verified,
        artifacts=artifacts,
        warnings=warnings,
    )
    (staging / MANIFEST).write_bytes(manifest_bytes)
    artifacts[MANIFEST] = file_digest(staging / MANIFEST)
    (staging / SHA256SUMS).write_bytes(sha256sums(artifacts))
    for path in staging.iterdir():  # independent of the umask: outcontract.MODES
        if path.is_dir():
            path.chmod(DIRECTORY_MODE)
            for inner in path.iterdir():
                inner.chmod(mode_of(f"{path.name}/{inner.name}"))
        else:
            path.chmod(mode_of(path.name))
    return initrd, artifacts, memory
