"""`make bench`, the serving part: `netbuild serve` against nginx on the same files, side by side.

Both serve one directory on loopback, each with its access log written to a file: nginx (Debian's
package, started here with a configuration of its own in a temporary directory, one worker per
core, sendfile on, and stopped afterwards; no system service is touched) and `netbuild serve`
(one process per core too, its default).
wrk loads each in turn, on kept-alive connections:
  - a large file (the benchmark's initrd) on LARGE_CONNECTIONS connections: MB/s;
  - a small file (netboot.ipxe) on SMALL_CONNECTIONS connections, and on one: requests/s.
Each round starts both servers afresh, warms each up the same way (every measurement for a
second), then takes each measurement of one and, right after it, of the other, in another order
each round; `rounds` rounds (ROUNDS alone, at least that many in `make bench`), the ratio is the
median of the rounds' ratios. The client shares the machine's cores with the server, the same
for both.

Run alone (`python tests/bench_serve.py [DIR]`) it serves DIR's initrd and netboot.ipxe, or, with
no DIR, a 200 MB file and a script it writes.
"""

from __future__ import annotations

import argparse
import http.client
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MB = 1_000_000
LARGE_CONNECTIONS = 4  # machines loading their initrd at once
SMALL_CONNECTIONS = 8
ROUNDS = 5
WARM_UP_S = 1.0  # per server and file, before each round's measurements
GOALS_AT_LEAST = {
    "serve / nginx, large file MB/s": 0.9,
    f"serve / nginx, small file requests/s ({SMALL_CONNECTIONS} connections)": 0.5,
}

# Prints what wrk measured, exactly (its own summary rounds to 3 digits and picks units).
_WRK_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format("netbuild-bench %d %d %d %d %d\\n", summary.duration, summary.requests, summary.bytes,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""

_NGINX_CONF = """
daemon off;
{user}
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log {tmp}/access.log;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 30s;
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    root {root};
  }}
}}
"""


@dataclass(frozen=True)
class Load:
    seconds: float
    requests: int
    bytes: int
    errors: int  # connection errors and non-2xx answers

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_serving(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited with {proc.returncode} before serving")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("HEAD", "/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {what} is not serving on 127.0.0.1:{port} after 30 s")


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def nginx(root: Path, work: Path) -> Iterator[int]:
    """nginx serving root on a free loopback port, configured and logging under work/nginx."""
    tmp = work / "nginx"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    # The workers read the files as this process does: nginx started by root hands them to
    # `nobody` otherwise, who may not enter a private temporary directory (403 for everything).
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf.write_text(_NGINX_CONF.format(user=user, tmp=tmp, port=port, root=root))
    # -e: the error log before the configuration is read (else it opens /var/log/nginx/error.log).
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_serving(port, proc, "nginx")
        yield port
    finally:
        _stop(proc, signal.SIGQUIT)  # nginx's graceful stop: the workers finish and exit


@contextmanager
def netbuild_serve(root: Path, work: Path) -> Iterator[int]:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "netbuild-serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "builder", "serve", str(root), "--port", str(port)],
                                cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(port, proc, "netbuild serve")
        yield port
    finally:
        _stop(proc, signal.SIGTERM)


def wrk(port: int, path: str, connections: int, seconds: float, script: Path) -> Load:
    threads = min(connections, os.cpu_count() or 1)
    proc = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s",
                           "-s", str(script), f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("netbuild-bench ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"bench: wrk failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    duration_us, requests, size, errors, bad_status = map(int, line.split()[1:])
    return Load(duration_us / 1e6, requests, size, errors + bad_status)


@dataclass(frozen=True)
class Comparison:
    rows: list[tuple[str, str, str, str]]  # what, nginx, netbuild serve, ratio
    ratios: dict[str, float]
    rounds: int
    seconds: float


def compare(root: Path, large: str, small: str, work: Path, *, rounds: int, seconds: float) -> Comparison:
    """Both servers on root's `large` and `small` files, interleaved; medians of `rounds`."""
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        raise SystemExit("bench: the serving benchmark needs wrk and nginx (make install puts them there)")
    work.mkdir(parents=True, exist_ok=True)
    script = work / "report.lua"
    script.write_text(_WRK_REPORT)
    tests = [("large", f"/{large}", LARGE_CONNECTIONS), ("small", f"/{small}", SMALL_CONNECTIONS),
             ("small-1", f"/{small}", 1)]
    loads: dict[tuple[str, str], list[Load]] = {}
    names = ["nginx", "netbuild"]
    for rep in range(rounds):
        order = names if rep % 2 == 0 else names[::-1]
        print(f"bench: serving, round {rep + 1} of {rounds}: {', '.join(order)} in turn on each measurement",
              file=sys.stderr)
        # Both started afresh each round and both left running, the idle one waiting in epoll: each
        # measurement of one is next to the same of the other, whatever else the machine does.
        logs = work / f"round-{rep + 1}"  # both access logs: a few hundred MB by the end, removed after each round
        with nginx(root, logs) as nginx_port, netbuild_serve(root, logs) as own_port:
            ports = {"nginx": nginx_port, "netbuild": own_port}
            for name in order:  # the same warm-up for both: page cache, the first answers, the workers
                for _test, path, connections in tests:
                    wrk(ports[name], path, connections, WARM_UP_S, script)
            for test, path, connections in tests:
                for name in order:
                    load = wrk(ports[name], path, connections, seconds, script)
                    loads.setdefault((name, test), []).append(load)
                    print(f"bench:   {name} {test}: {load.requests_per_s:,.0f} requests/s, {load.mb_per_s:,.0f} MB/s",
                          file=sys.stderr)
        shutil.rmtree(logs)
    for key, runs in loads.items():
        if any(run.errors for run in runs):
            raise SystemExit(f"bench: {key[0]} answered {sum(r.errors for r in runs)} requests with errors ({key[1]})")

    def spread(name: str, test: str, rate: str, unit: str) -> str:
        values = sorted(getattr(run, rate) for run in loads[(name, test)])
        text = f"{statistics.median(values):,.0f} {unit}"
        return text if len(values) < 2 else f"{text} ({values[0]:,.0f}–{values[-1]:,.0f})"

    def ratio(test: str, rate: str) -> float:
        """The median of the rounds' ratios: each round's two measurements ran side by side."""
        pairs = zip(loads[("netbuild", test)], loads[("nginx", test)], strict=True)
        return statistics.median(getattr(own, rate) / getattr(theirs, rate) for own, theirs in pairs)

    size = (root / large).stat().st_size
    rows, ratios = [], {}
    for label, test, rate, unit, goal in [
        (f"large file ({size / MB:.0f} MB), {LARGE_CONNECTIONS} connections", "large", "mb_per_s", "MB/s",
         "serve / nginx, large file MB/s"),
        (f"small file ({(root / small).stat().st_size} bytes), {SMALL_CONNECTIONS} kept-alive connections", "small",
         "requests_per_s", "requests/s", f"serve / nginx, small file requests/s ({SMALL_CONNECTIONS} connections)"),
        (f"small file ({(root / small).stat().st_size} bytes), 1 kept-alive connection", "small-1",
         "requests_per_s", "requests/s", "serve / nginx, small file requests/s (1 connection)"),
    ]:
        ratios[goal] = ratio(test, rate)
        rows.append((label, spread("nginx", test, rate, unit), spread("netbuild", test, rate, unit),
                     f"{ratios[goal]:.2f}"))
    return Comparison(rows, ratios, rounds, seconds)


def nginx_version() -> str:
    proc = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return proc.stderr.strip().removeprefix("nginx version: ")


def render(comparison: Comparison) -> list[str]:
    rounds, seconds = comparison.rounds, comparison.seconds
    lines = [
        f"Serving: {nginx_version()} (one worker per core, sendfile) and `netbuild serve` (one process per core, its "
        "default) on loopback, each loaded in "
        f"turn by wrk for {seconds:g} s per measurement on kept-alive connections, access logs written to files; "
        f"median of {rounds} rounds (slowest–fastest in brackets), each server's measurement right after the "
        "other's, in another order each round, after the same warm-up; the ratio is the median of the rounds' "
        "ratios.",
        "",
        "| served | nginx | netbuild serve | serve / nginx |",
        "|---|---:|---:|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in comparison.rows),
    ]
    return lines


def _example_tree(work: Path) -> Path:
    root = work / "files"
    root.mkdir()
    with open(root / "initrd", "wb") as f:
        for _ in range(200):
            f.write(os.urandom(MB))
    (root / "netboot.ipxe").write_text(
        "#!ipxe\n# netbuild\nkernel bzImage initrd=initrd init=/nix/store/" + "a" * 32
        + "-nixos-system-x/init console=ttyS0 ${cmdline}\ninitrd initrd\nboot\n")
    # As an OUT is by the time machines boot from it: settled (netbuild serve keeps a small file in
    # memory once it has not changed for 2 s, builder/run/serve_cache.py).
    time.sleep(2)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", type=Path, help="an OUT directory (default: files made here)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="netbuild-bench-serve-", dir="/var/tmp"))
    try:
        root = args.directory.resolve() if args.directory else _example_tree(work)
        comparison = compare(root, "initrd", "netboot.ipxe", work, rounds=args.rounds, seconds=args.seconds)
        print("\n".join(render(comparison)))
        print()
        for name, ratio in comparison.ratios.items():
            goal = GOALS_AT_LEAST.get(name)
            verdict = f" (goal ≥ {goal}: {'met' if ratio >= goal else 'NOT met'})" if goal else ""
            print(f"{name}: {ratio:.3f}{verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
