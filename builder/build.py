"""The main job: closure + recipe → BootPlan → artifacts in a staging directory → self-check → OUT."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from builder.checks.selfcheck import ExpectedInitrd, check_initrd, check_kernel, check_sums
from builder.closure import Closure
from builder.outdir import check_replaceable, discard, make_staging, publish
from builder.plan import BootPlan, Options, make_plan
from builder.recipe import Recipe
from builder.writers import ipxe, manifest, params
from builder.writers import registration as reg
from builder.writers.initrd import InitrdResult, Progress, write_initrd

ARTIFACT_MODE = 0o644


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
    artifacts: dict[str, tuple[int, str]]


def build(
    closure: Closure,
    recipe: Recipe,
    options: Options,
    out: Path,
    *,
    progress: Progress | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> BuildResult:
    plan = make_plan(closure, recipe, options)
    check_replaceable(out)
    staging = make_staging(out)
    try:
        result = _write_all(plan, staging, progress, log)
        publish(staging, out)
    except BaseException:
        discard(staging)
        raise
    return BuildResult(out=out, plan=plan, initrd=result[0], artifacts=result[1])


def _write_all(
    plan: BootPlan, staging: Path, progress: Progress | None, log: Callable[[str], None]
) -> tuple[InitrdResult, dict[str, tuple[int, str]]]:
    log(f"packing {len(plan.closure)} store paths ({plan.compression})")
    with open(staging / "initrd", "wb") as f:
        initrd = write_initrd(
            f,
            closure=plan.closure,
            store=plan.store,
            init=plan.init,
            compression=plan.compression,
            jobs=plan.jobs,
            progress=progress,
        )
    shutil.copyfile(plan.kernel.file, staging / "bzImage")
    files = {
        "registration": reg.registration(initrd.verified),
        "store-paths": reg.store_paths(initrd.verified),
        "total-nar-size": reg.total_nar_size(initrd.verified),
        "kernel-params": params.kernel_params(plan.cmdline),
        "netboot.ipxe": ipxe.netboot_script(
            cmdline=plan.cmdline,
            base_url=plan.base_url,
            toplevel=plan.toplevel,
            description=f"netbuild {netbuild_version()} — recipe {plan.recipe.name}",
        ),
    }
    for name, data in files.items():
        (staging / name).write_bytes(data)

    log("checking what was written")
    check_kernel(staging / "bzImage")
    check_initrd(
        staging / "initrd",
        ExpectedInitrd(str(plan.compression.name), initrd.entries, initrd.plain_size, initrd.plain_sha256),
    )
    artifacts = {name: manifest.file_digest(staging / name) for name in ["bzImage", "initrd", *files]}
    manifest_bytes = manifest.manifest(
        version=netbuild_version(),
        sections=_sections(plan, initrd, kernel_sha256=artifacts["bzImage"][1]),
        closure=initrd.verified,
        artifacts=artifacts,
    )
    (staging / manifest.MANIFEST_NAME).write_bytes(manifest_bytes)
    artifacts[manifest.MANIFEST_NAME] = manifest.file_digest(staging / manifest.MANIFEST_NAME)
    (staging / manifest.SUMS_NAME).write_bytes(manifest.sha256sums(artifacts))
    check_sums(staging)
    for path in staging.iterdir():
        path.chmod(ARTIFACT_MODE)  # independent of the umask: OUT is served to other machines
    return initrd, artifacts


def _sections(plan: BootPlan, initrd: InitrdResult, *, kernel_sha256: str) -> dict[str, object]:
    """What was built from what. Nothing machine-specific: no file names, directories or times."""
    kernel = plan.kernel
    return {
        "inputs": {
            "toplevel": plan.toplevel,
            "kernel": {
                "origin": kernel.origin,
                "version": kernel.header.version,
                "bootProtocol": "{}.{:02d}".format(*kernel.header.protocol),
                "sha256": kernel_sha256,
            },
            "init": plan.init,
            "closureRegistrationSha256": hashlib.sha256(initrd.registration).hexdigest(),
        },
        "recipe": plan.recipe.settings(),
        "settings": {
            "compress": str(plan.compression),
            "cmdline": plan.cmdline,
            "baseUrl": plan.base_url,
        },
        "initrd": {
            "layout": plan.recipe.layout,
            "members": [{"compression": str(plan.compression), "entries": initrd.entries,
                         "uncompressedSize": initrd.plain_size}],
        },
    }
