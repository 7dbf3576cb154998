"""`manifest.json` (what was built from what) and `SHA256SUMS`.

Nothing machine-specific goes in: no input file names or directories, no times, no job count —
two builds of the same closure with the same settings must produce the same manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder.closure import VerifiedPath
from builder.plan import BootPlan, FromBootspec, Menu
from builder.run.memory import BootMemory
from builder.writers.members import InitrdResult
from builder.writers.menu import entry_script_name
from builder.writers.uki import UkiResult

MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
FORMAT_VERSION = 1


def file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def manifest(
    *,
    version: str,
    sections: Mapping[str, Any],
    closure: list[VerifiedPath],
    artifacts: Mapping[str, tuple[int, str]],
    warnings: list[str],
) -> bytes:
    """`sections` (inputs, recipe, settings, …) go between the header and the artifacts, in order."""
    doc: dict[str, Any] = {"netbuild": {"version": version, "manifest": FORMAT_VERSION}}
    doc.update(sections)
    doc["warnings"] = list(warnings)  # preflight's, so that a served image carries its doubts with it
    doc["artifacts"] = {name: {"size": size, "sha256": digest} for name, (size, digest) in sorted(artifacts.items())}
    doc["closure"] = {
        "paths": len(closure),
        "narSize": sum(p.nar_size for p in closure),
        "storePaths": [
            {"path": p.path, "narHash": p.nar_hash_nix32, "narSize": p.nar_size, "references": list(p.references)}
            for p in sorted(closure, key=lambda p: p.path)
        ],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def sections(plan: BootPlan, initrd: InitrdResult, memory: BootMemory, uki: UkiResult | None, *,
             kernel_sha256: str) -> dict[str, object]:
    """What was built from what. Nothing machine-specific: no file names, directories or times."""
    kernel = plan.kernel
    inputs: dict[str, object] = {
        "toplevel": plan.toplevel,
        "kernel": {
            "origin": kernel.origin,
            "version": kernel.header.version,
            "bootProtocol": "{}.{:02d}".format(*kernel.header.protocol),
            "sha256": kernel_sha256,
        },
        "init": plan.init,
        "closureRegistrationSha256": hashlib.sha256(initrd.registration).hexdigest(),
    }
    settings: dict[str, object] = {
        "compress": str(plan.compression),
        "cmdline": plan.cmdline,
        "baseUrl": plan.base_url,
    }
    # Only with a boot.json, so that an OUT built from the toplevel's symlinks is as it always was.
    if plan.bootspec is not None:
        inputs["bootspec"] = _bootspec(plan.bootspec)
    if plan.menu is not None:
        settings["menu"] = _menu(plan.menu)
    result: dict[str, object] = {
        "inputs": inputs,
        "recipe": plan.recipe.settings(),
        "settings": settings,
        "initrd": {
            "layout": plan.recipe.layout,
            "members": [m.to_json() for m in initrd.members],
        },
        "memory": memory.to_json(),  # what a machine needs to boot the image: builder/run/memory.py
    }
    if uki is not None and plan.uki is not None:  # only with --uki: other manifests stay as they were
        signing = plan.uki.signing
        result["uki"] = {
            "stub": uki.stub.origin,
            "signedBy": signing.subject if signing is not None else None,
            "sections": [{"name": s.name, "offset": s.offset, "size": s.size, "virtualAddress": s.virtual_address}
                         for s in uki.sections],
        }
    return result


def _bootspec(used: FromBootspec) -> dict[str, object]:
    """Where each choice came from: the field of boot.json (a jq path), or the option that won."""
    return {
        "file": used.file,
        "specialisation": used.specialisation,
        "kernel": used.kernel,
        "init": used.init,
        "kernelParams": used.kernel_params,
        "initrd": used.initrd,
    }


def _menu(menu: Menu) -> dict[str, object]:
    return {
        "timeoutSeconds": menu.timeout_s,
        "entries": [
            {"name": e.name, "script": entry_script_name(e.name), "toplevel": e.toplevel, "init": e.init,
             "cmdline": e.cmdline}
            for e in menu.entries
        ],
    }


def sha256sums(artifacts: Mapping[str, tuple[int, str]]) -> bytes:
    return "".join(f"{digest}  {name}\n" for name, (_, digest) in sorted(artifacts.items())).encode()
