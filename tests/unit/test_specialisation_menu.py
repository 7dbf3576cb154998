"""netboot.ipxe for a system with specialisations: ipxe/menu.ipxe (the menu `netbuild menu` writes too)
over the system and each specialisation, each entry chain-loading its own netboot-<name>.ipxe. What
iPXE will read, line for line."""

from __future__ import annotations

from builder.plan import Menu, MenuEntry
from builder.writers.ipxe import netboot_script
from builder.writers.menu import netboot_scripts

TOP = "/nix/store/aaaa-nixos-system-x"
FAST = "/nix/store/bbbb-nixos-system-x-fast"


def menu(timeout_s: int = 5) -> Menu:
    return Menu(
        entries=(
            MenuEntry(name="main", label="NixOS 24.05 (Linux 6.1)", toplevel=TOP, init=f"{TOP}/init",
                      cmdline=f"rdinit={TOP}/init console=ttyS0", initrd=None),
            MenuEntry(name="fast", label="NixOS 24.05 fast (Linux 6.1)", toplevel=FAST, init=f"{FAST}/init",
                      cmdline=f"rdinit={FAST}/init console=ttyS0 mitigations=off", initrd=None),
        ),
        timeout_s=timeout_s,
        title="NixOS 24.05 (Linux 6.1)",
    )


def body(script: bytes) -> list[str]:
    return [line for line in script.decode().splitlines() if line and not line.startswith("#")]


def scripts(base_url: str | None = None, timeout_s: int = 5) -> dict[str, bytes]:
    return netboot_scripts(cmdline=f"rdinit={TOP}/init console=ttyS0", base_url=base_url, toplevel=TOP,
                           description="netbuild 1.0 — recipe netboot", menu=menu(timeout_s))


def test_the_menu_script() -> None:
    written = scripts()
    assert sorted(written) == ["netboot-fast.ipxe", "netboot-main.ipxe", "netboot.ipxe"]
    script = written["netboot.ipxe"]
    assert script.startswith(b"#!ipxe\n# netbuild 1.0 \xe2\x80\x94 recipe netboot\n")
    assert body(script) == [
        "isset ${netbuild-specialisation} || goto netbuild-menu",
        "goto netbuild-specialisation-${netbuild-specialisation} || "
        "echo netbuild menu: no specialisation named ${netbuild-specialisation}",
        ":netbuild-menu",
        "menu NixOS 24.05 (Linux 6.1)",
        "item main main - NixOS 24.05 (Linux 6.1)",
        "item fast fast - NixOS 24.05 fast (Linux 6.1)",
        "choose --default main --timeout 5000 netbuild-specialisation || goto netbuild-cancelled",
        "goto netbuild-specialisation-${netbuild-specialisation}",
        ":netbuild-specialisation-main",
        "chain netboot-main.ipxe || goto netbuild-failed",
        ":netbuild-specialisation-fast",
        "chain netboot-fast.ipxe || goto netbuild-failed",
        ":netbuild-cancelled",
        "echo netbuild menu: nothing chosen",
        "exit 1",
        ":netbuild-failed",
        "echo netbuild menu: could not boot ${netbuild-specialisation}",
        "exit 1",
    ]
    # The header tells an operator how to skip the menu.
    assert "#   set netbuild-specialisation main && chain netboot.ipxe\n" in script.decode()
    assert b"--timeout 30000 " in scripts(timeout_s=30)["netboot.ipxe"]


def test_every_entry_boots_the_one_kernel_and_initrd_with_its_own_line() -> None:
    written = scripts()
    assert body(written["netboot-fast.ipxe"]) == [
        f"kernel bzImage initrd=initrd rdinit={FAST}/init console=ttyS0 mitigations=off ${{cmdline}}",
        "initrd initrd",
        "boot",
    ]
    assert f"# Boots {FAST} with".encode() in written["netboot-fast.ipxe"]
    # The main system's script is netboot.ipxe as it would be without the menu.
    assert written["netboot-main.ipxe"] == netboot_script(cmdline=f"rdinit={TOP}/init console=ttyS0", base_url=None,
                                                          toplevel=TOP, description="netbuild 1.0 — recipe netboot")


def test_absolute_urls_everywhere_with_a_base_url() -> None:
    written = scripts(base_url="http://10.0.0.1/img")
    assert "chain http://10.0.0.1/img/netboot-main.ipxe || goto netbuild-failed" in body(written["netboot.ipxe"])
    assert body(written["netboot-main.ipxe"])[1:] == ["initrd http://10.0.0.1/img/initrd", "boot"]


def test_without_a_menu_one_script() -> None:
    alone = netboot_scripts(cmdline="rdinit=/x", base_url=None, toplevel=None, description="d", menu=None)
    assert alone == {"netboot.ipxe": netboot_script(cmdline="rdinit=/x", base_url=None, toplevel=None,
                                                    description="d")}
