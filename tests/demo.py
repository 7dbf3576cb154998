"""`make demo`: build a small real Nix closure, pack it with netbuild into out/, boot it in QEMU.

The closure is the test fixture (tests/fixtures/system.nix): Debian's kernel, a BusyBox init and
a store path with every kind of entry. The guest's init prints a digest of its /nix/store; the
demo recomputes it on the host from the closure, so a match means the whole store arrived intact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support.digest import store_digest
from support.nixstore import FIXTURES, nix_build, nix_path_literal, path_info
from support.qemu import boot, find_kernel, kernel_release, parse_digest

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "out"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> int:
    kernel = find_kernel()
    step(f"building the demo closure with Nix (kernel {kernel.name}, BusyBox init)")
    toplevel = nix_build(
        FIXTURES / "system.nix",
        {"busybox": nix_path_literal(Path("/bin/busybox")), "kernel": nix_path_literal(kernel)},
        {"kernelRelease": kernel_release(kernel)},
    )
    info = path_info([toplevel])
    print(f"{toplevel}: {len(info)} store paths, {sum(e['narSize'] for e in info) / 2**20:.1f} MiB")

    with tempfile.TemporaryDirectory() as tmp:
        closure = Path(tmp) / "closure.json"
        closure.write_text(json.dumps(info))
        step(f"netbuild {closure.name} -o out/")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "builder", str(closure), "-o", str(OUT)], check=True, cwd=REPO)
        print(f"built in {time.monotonic() - started:.1f} s:")
        for f in sorted(OUT.iterdir()):
            print(f"  out/{f.name:<16} {f.stat().st_size:>10} bytes")

    step('booting it: qemu-system-x86_64 -kernel out/bzImage -initrd out/initrd -append "$(cat out/kernel-params)"')
    started = time.monotonic()
    console = boot(OUT / "bzImage", OUT / "initrd", (OUT / "kernel-params").read_text().strip())
    elapsed = time.monotonic() - started
    for line in console.splitlines():
        if not line.startswith("NETBUILD-ENTRY") and ("Run /nix/store" in line or line.startswith("NETBUILD-")
                                                      or "Linux version" in line or "Power down" in line):
            print("  | " + line)
    guest = parse_digest(console)
    host = store_digest([e["path"] for e in info], (OUT / "registration").read_bytes())
    step(f"booted to the init marker in {elapsed:.1f} s under TCG")
    if guest != host:
        print(f"guest store digest {guest}\nhost  store digest {host}\nMISMATCH", file=sys.stderr)
        return 1
    print(f"the guest's /nix/store digest equals the host's ({guest[:16]}…): every store path arrived intact")
    print("next: netboot a real machine with out/ — see README.md, 'On real machines'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
