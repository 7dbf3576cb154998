"""The build options a user reaches for: --base-url, --append, --kernel, --init, --toplevel, and a
closure that is a single program rather than a NixOS system."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RunNetbuild, SystemClosure
from support.qemu import boot

pytestmark = [pytest.mark.nix]



def test_base_url_and_append_reach_the_script_and_the_params(
    tmp_path: Path, system_closure: SystemClosure, run_netbuild: RunNetbuild
) -> None:
    out = tmp_path / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out), "--base-url", "http://10.0.2.2:8080/img",
                 "--append", "quiet", "--append", "netbuild.test=1", "--toplevel", system_closure.toplevel)
    params = (out / "kernel-params").read_text()
    assert params == (f"init={system_closure.toplevel}/init console=ttyS0 panic=-1 loglevel=4 "
                      "quiet netbuild.test=1\n")
    script = (out / "netboot.ipxe").read_text().splitlines()
    assert f"kernel http://10.0.2.2:8080/img/bzImage initrd=initrd {params.strip()} ${{cmdline}}" in script
    assert "initrd http://10.0.2.2:8080/img/initrd" in script
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["baseUrl"] == "http://10.0.2.2:8080/img"
    assert manifest["inputs"]["kernel"]["origin"].endswith("/bzImage")


def test_a_single_program_closure_boots_with_kernel_and_init(
    tmp_path: Path, system_closure: SystemClosure, run_netbuild: RunNetbuild, kernel_image: Path
) -> None:
    """No toplevel: a program and its dependencies, the kernel from a file, init named explicitly."""
    link = system_closure.path_named("-hello-link")  # a store path that is a symlink to a script
    wanted = {link, system_closure.path_named("-hello-script"), system_closure.path_named("-busybox")}
    closure = tmp_path / "program.json"
    closure.write_text(json.dumps([e for e in system_closure.path_info if e["path"] in wanted]))
    out = tmp_path / "out"

    refused = run_netbuild(str(closure), "-o", str(out), check=False)
    assert refused.returncode == 1 and "no toplevel" in refused.stderr.decode()

    run_netbuild(str(closure), "-o", str(out), "--kernel", str(kernel_image), "--init", link,
                 "--append", "console=ttyS0 panic=-1")
    assert (out / "kernel-params").read_text() == f"init={link} console=ttyS0 panic=-1\n"
    kernel = json.loads((out / "manifest.json").read_text())["inputs"]["kernel"]
    assert kernel["origin"] == "--kernel" and kernel_image.name not in json.dumps(kernel)
    assert (out / "bzImage").read_bytes() == kernel_image.read_bytes()
    # The kernel runs netbuild's /init, which runs init= (the link); the script prints "hello" and
    # exits; the kernel then panics and QEMU (-no-reboot) stops.
    console = boot(out / "bzImage", out / "initrd", (out / "kernel-params").read_text().strip(), expect="hello")
    assert "Run /init as init process" in console


def test_init_outside_the_closure_is_refused(
    tmp_path: Path, system_closure: SystemClosure, run_netbuild: RunNetbuild
) -> None:
    proc = run_netbuild(str(system_closure.closure_json), "-o", str(tmp_path / "out"), "--init", "/bin/sh",
                        check=False)
    assert proc.returncode == 1 and proc.stderr.decode() == "error: --init /bin/sh is not inside /nix/store\n"
