"""Session fixtures shared by netbuild's tests: the kernel, a closure built by real Nix, the
netbuild CLI, and one OUT directory built from that closure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# tests/ has no __init__.py, so pytest puts tests/ itself on sys.path for this conftest: the
# helpers import as `support.*` (and `conftest` for its types) from every test directory.
from support.nixstore import (
    FIXTURES,
    attrs_closure,
    nix_build,
    nix_path_literal,
    path_info,
    to_object_form,
)
from support.qemu import find_kernel, kernel_release

NETBUILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class SystemClosure:
    toplevel: str
    paths: list[str]  # sorted
    path_info: list[dict[str, Any]]  # list form, as `nix path-info --json -r` prints it
    closure_json: Path  # that list form
    attrs_json: Path  # structured-attrs exportReferencesGraph: {"closure": [...]}
    object_json: Path  # object form keyed by path (Nix ≥ 2.19)

    def path_named(self, suffix: str) -> str:
        """The one store path of the closure whose name ends with suffix (e.g. '-busybox')."""
        (path,) = [p for p in self.paths if p.endswith(suffix)]
        return path

    def copy_store(self, root: Path) -> Path:
        """Copy the closure to root/nix/store (for --store-root); returns root."""
        (root / "nix" / "store").mkdir(parents=True)
        for path in self.paths:
            subprocess.run(["cp", "-a", path, str(root / path.lstrip("/"))], check=True)
        return root


RunNetbuild = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """netbuild's segment cache lives in $XDG_CACHE_HOME: the tests get their own, never the user's,
    shared by the whole session (as a user's is shared by their builds)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(scope="session")
def kernel_image() -> Path:
    """The kernel to boot and to put in the closure: $NETBUILD_TEST_KERNEL or the newest
    /boot/vmlinuz-*. Missing is a failure, not a skip: these tests are the point of the suite."""
    try:
        return find_kernel()
    except FileNotFoundError as e:
        pytest.fail(str(e))


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


@pytest.fixture(scope="session")
def system_closure(kernel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> SystemClosure:
    """tests/fixtures/system.nix built once per session, with its closure in every input form."""
    toplevel = nix_build(
        FIXTURES / "system.nix",
        {"busybox": nix_path_literal(Path("/bin/busybox")), "kernel": nix_path_literal(kernel_image)},
        {"kernelRelease": kernel_release(kernel_image)},
    )
    info = path_info([toplevel])
    tmp = tmp_path_factory.mktemp("closure")
    return SystemClosure(
        toplevel=toplevel,
        paths=sorted(entry["path"] for entry in info),
        path_info=info,
        closure_json=_write_json(tmp / "closure.json", info),
        attrs_json=_write_json(tmp / "attrs.json", attrs_closure([toplevel])),
        object_json=_write_json(tmp / "closure-object.json", to_object_form(info)),
    )


@pytest.fixture(scope="session")
def run_netbuild() -> RunNetbuild:
    """Run `python -m builder ARGS…`. `env`, like subprocess's, replaces the environment."""

    def run(
        *args: str,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = [sys.executable, "-m", "builder", *args]
        proc = subprocess.run(cmd, cwd=cwd, env=env, input=input, capture_output=True, timeout=NETBUILD_TIMEOUT_S)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"netbuild {' '.join(args)} exited {proc.returncode}\n"
                f"stderr:\n{proc.stderr.decode(errors='replace')}\n"
                f"stdout (tail):\n{proc.stdout.decode(errors='replace')[-2000:]}"
            )
        return proc

    return run


@pytest.fixture(scope="session")
def built_out(
    system_closure: SystemClosure, run_netbuild: RunNetbuild, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """OUT built once from the list-form closure with default options; treat it as read-only."""
    out = tmp_path_factory.mktemp("built") / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out))
    return out
