"""`make bench`: netbuild against the anchors on one benchmark closure, in one run, on this machine.

Builds the benchmark closure with the real Nix from host files (tests/fixtures/bench.nix), then
times, side by side:
  - the nixpkgs-style pipeline (cp --parents, touch -d @1, sort -z, cpio --reproducible, zstd -10);
  - `zstd -T<cores> -10` alone over netbuild's uncompressed archive (the same bytes): the limit;
  - netbuild cold (empty cache), warm (nothing changed), warm after one package changed, no cache;
  - `netbuild serve` against nginx serving the built OUT (tests/bench_serve.py);
and reports sizes (against one zstd stream of the same archive and against per-path compression),
peak memory from a 50 MB to a ~1 GB closure, the time to the init marker when QEMU boots the
image in each layout, and, for every layout (netboot, netboot-squashfs, vm-9p, vm-disk), "closure
changed → init running": the build after one package changed plus the boot to the init marker.
Prints one table and, with --write FILE, writes it with the machine described.
`--layouts-only` builds the closure and runs only that last part.

Ratios are what count (the goals in the README); absolute seconds depend on the machine.
`--smoke` runs the same steps on a tiny closure and checks only correctness (the CI test does that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_serve import GOALS_AT_LEAST, ROUNDS, Comparison, compare
from bench_serve import render as render_serving
from support.generic_kernel import generic_kernel
from support.nixstore import FIXTURES, nix_build, nix_path_literal, path_info
from support.qemu import QEMU, find_kernel, kernel_release

from builder.run.vmstore import store_qemu_args

MB = 1_000_000
NAME_OK = re.compile(r"[^A-Za-z0-9+\-._?=]")
MARKER = b"NETBUILD-BENCH-INIT"

GOALS = {
    "cold / zstd limit": 1.15,
    "cold / nixpkgs pipeline": 0.5,
    "warm (one changed) / cold": 0.08,
    "size / one zstd stream": 1.02,
}
PEAK_MEMORY_GOAL_MB = 200
REPEATS = 3  # timed runs per step; the median counts
SETTLE_S = 2.0


@dataclass
class Run:
    seconds: float
    peak_mb: float
    output: Path | None = None
    stdout: str = ""
    spread: tuple[float, float] | None = None  # fastest and slowest of repeated runs


@dataclass
class Results:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # what, time, size, memory
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    serving: Comparison | None = None


def measured(cmd: list[str], *, cwd: Path | None = None, stdin: Path | None = None, stdout: Path | None = None,
             env: dict[str, str] | None = None, shell: bool = False) -> Run:
    """Run a command; wall time and the peak resident memory of its largest process."""
    start = time.perf_counter()
    with open(stdin or os.devnull, "rb") as fin, open(stdout or os.devnull, "wb") as fout:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=env, shell=shell)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, cmd))[:300]} failed ({proc.returncode}):\n{err}")
    return Run(seconds, usage.ru_maxrss / 1024, stdout)


def tree_bytes(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.lstat(full).st_size
    return total if path.is_dir() else path.lstat().st_size


def select_sources(roots: list[Path], target_bytes: int, min_paths: int) -> list[dict[str, str]]:
    """Host directories/files to import, in a stable order, until both the size and count are met."""
    chosen, total, seen = [], 0, set()
    for root in roots:
        for child in sorted(root.iterdir()):
            if total >= target_bytes and len(chosen) >= min_paths:
                return chosen
            if child.is_symlink() or not os.access(child, os.R_OK) or child == Path("/usr/share/doc"):
                continue
            name = "bench-" + NAME_OK.sub("_", child.name)
            while name in seen:
                name += "_"
            seen.add(name)
            chosen.append({"path": str(child), "name": name})
            total += tree_bytes(child)
    return chosen


def build_closure(work: Path, tag: str, sources: list[dict[str, str]], kernel: Path, seed: str) -> tuple[Path, str]:
    sources_json = work / f"sources-{tag}.json"
    sources_json.write_text(json.dumps(sources))
    toplevel = nix_build(
        FIXTURES / "bench.nix",
        {"sources": nix_path_literal(sources_json), "busybox": nix_path_literal(Path("/bin/busybox")),
         "kernel": nix_path_literal(kernel)},
        {"kernelRelease": kernel_release(kernel), "seed": seed},
    )
    closure = work / f"closure-{tag}-{seed}.json"
    closure.write_text(json.dumps(path_info([toplevel])))
    return closure, toplevel


def netbuild(closure: Path, out: Path, *args: str) -> Run:
    run = measured([sys.executable, "-m", "builder", str(closure), "-o", str(out), *args],
                   stdout=out.parent / f"{out.name}.stdout")
    run.output = out
    run.stdout = (out.parent / f"{out.name}.stdout").read_text()
    return run


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def nixpkgs_pipeline(work: Path, paths: list[str]) -> tuple[Run, int]:
    """What nixpkgs' make-initrd / netboot does with a closure, as a shell pipeline, timed whole."""
    root = work / "nixpkgs-root"
    listing = work / "nixpkgs-paths"
    listing.write_text("\n".join(paths) + "\n")
    out = work / "nixpkgs-initrd.zst"
    script = (
        f"set -euo pipefail; rm -rf {root}; mkdir -p {root}/nix/store; "
        # (`cp --parents` as nixpkgs does, spelled for GNU cp's quirks with /nix/store's sticky bit)
        f"xargs -a {listing} -d '\\n' cp -a -t {root}/nix/store; "
        f"cd {root}; find . -exec touch -h -d @1 {{}} +; "
        f"find . -print0 | sort -z | cpio -o -H newc -R +0:+0 --reproducible --null --quiet | zstd -10 -T1 -q > {out}"
    )
    run = measured(["bash", "-c", script])
    size = out.stat().st_size
    shutil.rmtree(root)
    return run, size


def per_path_size(work: Path, paths: list[str]) -> int:
    """The naive split: each store path's cpio compressed on its own at -10."""
    total = 0
    for path in paths:
        script = (f"cd / && find {path.lstrip('/')} | sort | cpio -o -H newc --reproducible --quiet | "
                  "zstd -10 -T1 -q | wc -c")
        total += int(subprocess.run(["bash", "-c", script], capture_output=True, check=True, text=True).stdout)
    return total


def boot_time(kernel: Path, initrd: Path, cmdline: str, memory_mb: int, timeout: float,
              extra: list[str] | None = None) -> tuple[float, str]:
    """Seconds from starting QEMU (TCG) to the init's marker, and the guest's uptime at it. `extra`: QEMU
    arguments after the kernel's (a VM layout's store)."""
    cmd = [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-no-reboot", "-display", "none", "-serial", "stdio",
           "-monitor", "none", "-nic", "none", "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
           *(extra or [])]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    seen = b""
    try:
        deadline = start + timeout
        while time.perf_counter() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen = (seen + line)[-4000:]
            if MARKER in line:
                elapsed = time.perf_counter() - start
                uptime = line.decode(errors="replace").split("uptime")[-1].strip()
                return elapsed, uptime
    finally:
        proc.kill()
        proc.wait()
    tail = seen.decode(errors="replace")
    raise SystemExit(f"bench: no {MARKER.decode()} within {timeout:.0f} s; console tail:\n{tail}")


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    import zstandard

    return (f"{cpu}, {os.cpu_count()} cores, {mem} MiB RAM; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, zstd {'.'.join(map(str, zstandard.ZSTD_VERSION))}")


def fmt_s(run: Run) -> str:
    if run.spread is None:
        return f"{run.seconds:.2f} s"
    low, high = run.spread
    return f"{run.seconds:.2f} s ({low:.2f}–{high:.2f})"


def median(runs: list[Run]) -> Run:
    """The median run (by time), with the spread of all of them."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    middle = ordered[len(ordered) // 2]
    spread = (ordered[0].seconds, ordered[-1].seconds) if len(ordered) > 1 else None
    return Run(middle.seconds, max(r.peak_mb for r in runs), middle.output, middle.stdout, spread)


def settle(inputs: list[Path]) -> None:
    """Before a timed run: flush pending writes, let the machine settle, and read its inputs into
    the page cache."""
    os.sync()
    time.sleep(SETTLE_S)  # memory freed by the step before is handed back to the hypervisor meanwhile
    buffer = bytearray(1 << 20)
    for top in inputs:
        for root, _dirs, files in os.walk(top) if top.is_dir() else [(str(top.parent), [], [top.name])]:
            for name in files:
                full = os.path.join(root, name)
                if os.path.islink(full):
                    continue
                with open(full, "rb", buffering=0) as f:
                    while f.readinto(buffer):
                        pass


def fmt_mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny closure; correctness only (CI)")
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the table to FILE (BENCHMARKS.md)")
    parser.add_argument("--no-boot", action="store_true", help="skip the QEMU boots")
    parser.add_argument("--work", type=Path, help="working directory (default: a new one under /var/tmp)")
    parser.add_argument("--layouts-only", action="store_true",
                        help="only 'closure changed → init running' in every layout (builds and boots)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    kernel = find_kernel()
    work = args.work or Path(tempfile.mkdtemp(prefix="netbuild-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    results = Results()

    roots = [Path("/usr/share/doc"), Path("/usr/share")]
    if args.smoke:
        sources = select_sources([Path("/usr/share/doc")], 3 * MB, 20)
        small_sources, big_sources = sources[:5], sources
    else:
        sources = select_sources(roots, 500 * MB, 1000)
        small_sources = select_sources(roots, 50 * MB, 1)
        big_sources = select_sources([*roots, Path("/usr/lib/python3/dist-packages"),
                                      Path("/usr/lib/x86_64-linux-gnu")], 1000 * MB, 1)
    print(f"bench: importing {len(sources)} host paths with Nix (first run copies them into the store)",
          file=sys.stderr)
    closure, _toplevel = build_closure(work, "main", sources, kernel, "1")
    changed_closure, _ = build_closure(work, "main", sources, kernel, "2")
    info = json.loads(closure.read_text())
    paths = sorted(e["path"] for e in info)
    nar_total = sum(e["narSize"] for e in info)
    if args.layouts_only:
        rows = changed_to_init(work, sources, kernel, closure, nar_total)
        print("\n".join(["| what | time | size | build + boot |", "|---|---:|---:|---:|",
                         *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)]))
        return 0
    entries = sum(1 for p in paths for _ in _walk_entries(p))
    print(f"bench: {len(paths)} store paths, {fmt_mb(nar_total)} NAR, {entries} entries", file=sys.stderr)

    # The same bytes netbuild compresses, uncompressed: the input of the zstd limit.
    netbuild(closure, work / "plain", "--compress", "none", "--no-cache", "-q")
    plain_initrd = work / "plain" / "initrd"

    # This machine's timings vary by ±15% from one run to the next (fresh memory costs page faults
    # in the hypervisor): every timed step runs `repeats` times, interleaved with the others, and
    # the median counts. Before each, pending writes are flushed and its inputs read into the page
    # cache, the same for the anchors and for netbuild.
    repeats = 1 if args.smoke else REPEATS
    store_files = [Path(p) for p in paths]
    runs: dict[str, list[Run]] = {name: [] for name in ("limit", "nixpkgs", "cold", "warm", "changed")}
    nixpkgs_size = single_stream = 0

    def time_limit() -> None:
        nonlocal single_stream
        settle([plain_initrd])
        runs["limit"].append(measured(["zstd", f"-T{cores}", "-10", "-q", "-c"], stdin=plain_initrd,
                                      stdout=work / "limit.zst"))
        single_stream = (work / "limit.zst").stat().st_size

    def time_nixpkgs() -> None:
        nonlocal nixpkgs_size
        settle(store_files)
        run, nixpkgs_size = nixpkgs_pipeline(work, paths)
        runs["nixpkgs"].append(run)

    def time_netbuild() -> None:
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        settle(store_files)
        runs["cold"].append(netbuild(closure, work / "cold", "--compress", "zstd:10", "--cache-dir", str(cache)))
        settle([])
        runs["warm"].append(netbuild(closure, work / "warm", "--compress", "zstd:10", "--cache-dir", str(cache)))
        settle(store_files)
        runs["changed"].append(netbuild(changed_closure, work / "changed", "--compress", "zstd:10",
                                        "--cache-dir", str(cache)))
        # Same bytes whatever the cache: checked on every round.
        if sha256(work / "cold" / "initrd") != sha256(work / "warm" / "initrd"):
            raise SystemExit("bench: the initrd differs between the cold and the warm build")

    # Each round runs the three in another order, so that no step always follows the same one (the
    # nixpkgs pipeline copies and deletes the whole closure, which slows whatever runs next here).
    steps = [("zstd limit", time_limit), ("nixpkgs pipeline", time_nixpkgs),
             ("netbuild cold, warm, changed", time_netbuild)]
    for rep in range(repeats):
        order = steps[rep % len(steps):] + steps[: rep % len(steps)]
        print(f"bench: timed runs, round {rep + 1} of {repeats}: {'; '.join(name for name, _ in order)}",
              file=sys.stderr)
        for _name, step in order:
            step()
    limit, nixpkgs, cold, warm, changed = (median(runs[name]) for name in ("limit", "nixpkgs", "cold", "warm",
                                                                          "changed"))
    settle(store_files)
    no_cache = netbuild(closure, work / "nocache", "--compress", "zstd:10", "--no-cache")
    netbuild(changed_closure, work / "changed-cold", "--compress", "zstd:10", "--no-cache")
    size = (work / "cold" / "initrd").stat().st_size

    if sha256(work / "cold" / "initrd") != sha256(work / "nocache" / "initrd"):
        raise SystemExit("bench: the initrd differs between cached and no-cache builds")
    if sha256(work / "changed" / "initrd") != sha256(work / "changed-cold" / "initrd"):
        raise SystemExit("bench: the rebuild after a change differs from a fresh build of the changed closure")

    per_path = per_path_size(work, paths)

    # What a fleet fetches from the OUT just built: its initrd and its script.
    print("bench: serving the OUT, netbuild serve against nginx", file=sys.stderr)
    results.serving = compare(work / "cold", "initrd", "netboot.ipxe", work / "serve",
                              rounds=1 if args.smoke else ROUNDS, seconds=1 if args.smoke else 5)

    print("bench: peak memory from a small to a large closure", file=sys.stderr)
    memory: list[tuple[int, float]] = []
    for tag, chosen in (("small", small_sources), ("large", big_sources)):
        c, _ = build_closure(work, tag, chosen, kernel, "1")
        total = sum(e["narSize"] for e in json.loads(c.read_text()))
        run = netbuild(c, work / f"mem-{tag}", "--compress", "zstd:10", "--no-cache", "-q")
        memory.append((total, run.peak_mb))
        shutil.rmtree(work / f"mem-{tag}")

    r = results
    r.ratios["cold / zstd limit"] = cold.seconds / limit.seconds
    r.ratios["cold / nixpkgs pipeline"] = cold.seconds / nixpkgs.seconds
    r.ratios["warm (one changed) / cold"] = changed.seconds / cold.seconds
    r.ratios["size / one zstd stream"] = size / single_stream
    r.rows += [
        ("nixpkgs-style pipeline (cp, touch, sort, cpio, zstd -10 -T1)", fmt_s(nixpkgs), fmt_mb(nixpkgs_size), "—"),
        (f"`zstd -T{cores} -10` over the same archive (the limit)", fmt_s(limit), fmt_mb(single_stream),
         f"{limit.peak_mb:.0f} MB"),
        ("each store path compressed alone at -10 (size only)", "—", fmt_mb(per_path), "—"),
        ("netbuild, cold (empty cache)", fmt_s(cold), fmt_mb(size), f"{cold.peak_mb:.0f} MB"),
        ("netbuild, warm, nothing changed", fmt_s(warm), fmt_mb(size), f"{warm.peak_mb:.0f} MB"),
        ("netbuild, warm, one package changed", fmt_s(changed), fmt_mb((work / 'changed' / 'initrd').stat().st_size),
         f"{changed.peak_mb:.0f} MB"),
        ("netbuild, --no-cache", fmt_s(no_cache), fmt_mb(size), f"{no_cache.peak_mb:.0f} MB"),
    ]
    for total, peak in memory:
        r.rows.append((f"netbuild, cold, {fmt_mb(total)} closure (peak memory)", "—", "—", f"{peak:.0f} MB"))
    reused = re.search(r"(\d+ of \d+ segments from the cache)", changed.stdout)
    r.notes.append(f"one package changed: {reused[1] if reused else '?'} (the package and the toplevel changed)")

    if not args.no_boot and not args.smoke:
        print("bench: booting the image in QEMU (TCG)", file=sys.stderr)
        cmdline = (work / "cold" / "kernel-params").read_text().strip()
        memory_mb = max(2048, int(3 * nar_total / (1 << 20)) + 1024)
        seconds, uptime = boot_time(work / "cold" / "bzImage", work / "cold" / "initrd", cmdline, memory_mb, 600)
        r.rows.append(("boot to init marker, initramfs layout (QEMU TCG)", f"{seconds:.1f} s",
                       fmt_mb(size), f"guest uptime {uptime} s"))
        r.rows.append(_squashfs_boot(closure, work, kernel, memory_mb))
        print("bench: closure changed → init running, in every layout", file=sys.stderr)
        r.rows += changed_to_init(work, sources, kernel, closure, nar_total)

    peaks = [peak for _, peak in memory] + [cold.peak_mb, warm.peak_mb, changed.peak_mb, no_cache.peak_mb]
    table = render(results, machine(), len(paths), nar_total, entries, max(peaks))
    print(table)
    if args.write:
        args.write.write_text(table)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _squashfs_boot(closure: Path, work: Path, kernel: Path, memory_mb: int) -> tuple[str, str, str, str]:
    out = work / "squashfs"
    # The bench toplevel has no kernel-modules: the built-in stage 1 takes the host's, for this kernel.
    modules = Path("/lib/modules") / kernel_release(kernel)
    build = netbuild(closure, out, "--recipe", "netboot-squashfs", "--modules", str(modules), "-q")
    cmdline = (out / "kernel-params").read_text().strip()
    seconds, uptime = boot_time(out / "bzImage", out / "initrd", cmdline, memory_mb, 600)
    return (f"squashfs layout: build {build.seconds:.1f} s (no cache); boot to init marker (QEMU TCG)",
            f"{seconds:.1f} s", fmt_mb((out / "initrd").stat().st_size), f"guest uptime {uptime} s")


LAYOUTS = ("netboot", "netboot-squashfs", "vm-9p", "vm-disk")


def changed_to_init(work: Path, sources: list[dict[str, str]], kernel: Path, closure: Path,
                    nar_total: int) -> list[tuple[str, str, str, str]]:
    """A developer's loop in each layout: the closure changed (one package, with another seed than the
    other steps use, so no cache holds it), netbuild builds OUT, QEMU (TCG) boots it to the init marker.
    Each layout's build starts from what it keeps: netboot from a segment cache warmed by a build of the
    unchanged closure; the others keep nothing. vm-9p boots Debian's generic kernel (the cloud kernel
    has no 9p), the rest the benchmark's kernel."""
    changed, _ = build_closure(work, "main", sources, kernel, "3")
    cache = work / "layouts-cache"
    netbuild(closure, work / "layouts-warmup", "--cache-dir", str(cache), "-q")
    host_modules = ["--modules", str(Path("/lib/modules") / kernel_release(kernel))]
    generic = generic_kernel()
    options = {
        "netboot": ["--cache-dir", str(cache)],
        "netboot-squashfs": host_modules,
        "vm-9p": ["--kernel", str(generic.vmlinuz), "--modules", str(generic.modules),
                  "--kernel-config", str(generic.config)],
        "vm-disk": host_modules,
    }
    memory_mb = max(2048, int(3 * nar_total / (1 << 20)) + 1024)
    store_files = [Path(e["path"]) for e in json.loads(changed.read_text())]
    rows = []
    for recipe in LAYOUTS:
        out = work / f"changed-{recipe}"
        settle(store_files)
        build = netbuild(changed, out, "--recipe", recipe, *options[recipe], "-q")
        layout = json.loads((out / "manifest.json").read_text())["initrd"]["layout"]
        cmdline = (out / "kernel-params").read_text().strip()
        seconds, _uptime = boot_time(out / "bzImage", out / "initrd", cmdline, memory_mb, 600,
                                     store_qemu_args(layout, str(out).replace(",", ",,")))
        image = out / "store.img"
        size = (out / "initrd").stat().st_size + (image.stat().st_size if image.exists() else 0)
        what = "initrd" + (" + store.img" if image.exists() else "")
        rows.append((f"closure changed → init running, {recipe}", f"{build.seconds + seconds:.1f} s",
                     f"{fmt_mb(size)} ({what})", f"{build.seconds:.1f} s + {seconds:.1f} s"))
        shutil.rmtree(out)
    return rows


def _walk_entries(path: str):  # type: ignore[no-untyped-def]
    yield path
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                yield os.path.join(root, name)


def render(r: Results, machine_text: str, paths: int, nar_total: int, entries: int, peak: float) -> str:
    lines = [
        "# netbuild benchmarks",
        "",
        f"Machine: {machine_text}.",
        f"Closure: {paths} store paths, {nar_total / MB:.0f} MB (NAR), {entries} entries, imported from host files "
        "by `tests/fixtures/bench.nix`. Produced by `make bench` (tests/bench.py) in one run. Times are the "
        f"median of {REPEATS} interleaved runs, in a different order each round (fastest–slowest in brackets); "
        "before each, pending writes are flushed, the machine is left idle for "
        f"{SETTLE_S:.0f} s and the run's inputs are read into the page cache, alike for the anchors and netbuild.",
        "",
        "| what | time | size | peak memory |",
        "|---|---:|---:|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in r.rows),
        "",
        *([*render_serving(r.serving), ""] if r.serving is not None else []),
        "| goal | measured | limit | met |",
        "|---|---:|---:|:---:|",
    ]
    for name, limit in GOALS.items():
        value = r.ratios[name]
        lines.append(f"| {name} | {value:.3f} | ≤ {limit} | {'yes' if value <= limit else 'NO'} |")
    if r.serving is not None:
        for name, floor in GOALS_AT_LEAST.items():
            value = r.serving.ratios[name]
            lines.append(f"| {name} | {value:.3f} | ≥ {floor} | {'yes' if value >= floor else 'NO'} |")
    lines.append(f"| peak memory, any run | {peak:.0f} MB | ≤ {PEAK_MEMORY_GOAL_MB} MB | "
                 f"{'yes' if peak <= PEAK_MEMORY_GOAL_MB else 'NO'} |")
    lines += ["", *(f"- {note}" for note in r.notes), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
