"""`netbuild serve` under a fleet's load and a hostile network: hundreds of machines asking at once,
small answers on kept-alive connections, clients that go quiet or stop reading, and files in the
tree that must not be opened (a FIFO would hang the request, a symlink loop has no file at its end).

Behaviour tests with generous bounds, not benchmarks (`make bench` measures against nginx). The
served directory is made here; nothing needs Nix, QEMU or the kernel. Loopback only."""

from __future__ import annotations

import errno
import http.client
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import pytest
from support.netboot import ServeProcess, netbuild_serve

from builder.run.serve_cache import SETTLED_NS

SCRIPT = b"#!ipxe\nkernel bzImage initrd=initrd init=/nix/store/x-system/init ${cmdline}\ninitrd initrd\nboot\n"
CLIENTS = 300
CLIENT_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served directory with what a fleet fetches and what a server must never open."""
    out = tmp_path_factory.mktemp("storm") / "out"
    out.mkdir()
    (out / "netboot.ipxe").write_bytes(SCRIPT)
    (out / "initrd").write_bytes(os.urandom(4 << 20))
    with open(out / "big", "wb") as f:  # larger than any socket buffer: a sender must wait for the reader
        f.truncate(256 << 20)
    (out / "loop").symlink_to("loop")
    (out / "ping").symlink_to("pong")
    (out / "pong").symlink_to("ping")
    os.mkfifo(out / "fifo")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(out / "socket"))  # the file stays after close
    return out


@pytest.fixture(scope="module")
def server(tree: Path) -> Iterator[ServeProcess]:
    with netbuild_serve(str(tree)) as s:
        yield s


@contextmanager
def served_with_timeouts(tree: Path, *, idle_s: float, send_s: float) -> Iterator[ServeProcess]:
    """The same server with short timeouts (the command's are 30 and 60 s), set through Server."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from builder.run.serve import Server\n"
        "def say(line):\n"
        "    print(line, flush=True)\n"
        f"server = Server([Path({str(tree)!r})], port=0, log=say, idle_timeout_s={idle_s}, send_timeout_s={send_s})\n"
        f"say(f'serving {tree} at {{server.url}}')\n"
        "server.serve_forever()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield ServeProcess(proc)
    finally:
        proc.kill()
        proc.wait()


def _address(server: ServeProcess) -> tuple[str, int]:
    url = urlsplit(server.url)
    assert url.hostname == "127.0.0.1" and url.port is not None  # loopback only
    return url.hostname, url.port


def _get(server: ServeProcess, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection(*_address(server), timeout=CLIENT_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def _wait_for_line(server: ServeProcess, text: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = server.wait_for_lines(10_000, timeout=0.2)
        if any(text in line for line in lines):
            return lines
    return server.wait_for_lines(10_000, timeout=0)


def test_three_hundred_machines_at_once(server: ServeProcess) -> None:
    """A fleet powered on together: every machine's first GET is answered, 90% within a second."""
    start = threading.Barrier(CLIENTS, timeout=60)
    times: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def machine() -> None:
        start.wait()
        began = time.monotonic()
        try:
            status, body = _get(server, "/netboot.ipxe")
            ok = (status, body) == (200, SCRIPT)
            why = f"status {status}, {len(body)} bytes"
        except OSError as e:
            ok, why = False, repr(e)
        with lock:
            times.append(time.monotonic() - began)
            if not ok:
                failures.append(why)

    threads = [threading.Thread(target=machine) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=CLIENT_TIMEOUT_S + 60)
    assert len(times) == CLIENTS
    assert failures == [], failures[:5]
    p90 = statistics.quantiles(times, n=10)[-1]
    assert p90 < 1.0, f"p90 {p90:.3f} s, slowest {max(times):.3f} s"


def test_small_answers_on_a_kept_alive_connection_are_quick(server: ServeProcess) -> None:
    """iPXE fetches script after script on one connection: no Nagle/delayed-ACK stall (40 ms) each."""
    conn = http.client.HTTPConnection(*_address(server), timeout=CLIENT_TIMEOUT_S)
    times = []
    for _ in range(200):
        began = time.perf_counter()
        assert _get(server, "/netboot.ipxe", conn) == (200, SCRIPT)
        times.append(time.perf_counter() - began)
    conn.close()
    assert statistics.median(times) < 0.005, f"median {statistics.median(times) * 1000:.1f} ms"


@pytest.mark.parametrize("name", ["loop", "ping", "fifo", "socket"])
def test_what_is_no_regular_file_is_refused_and_serving_goes_on(server: ServeProcess, tree: Path,
                                                                  name: str) -> None:
    conn = http.client.HTTPConnection(*_address(server), timeout=CLIENT_TIMEOUT_S)
    status, body = _get(server, f"/{name}", conn)
    assert status == 403 and body.startswith(b"403 Forbidden: "), (status, body)
    assert _get(server, "/netboot.ipxe", conn) == (200, SCRIPT)  # the same connection, still in step
    conn.close()
    assert _get(server, "/netboot.ipxe") == (200, SCRIPT)  # and new ones
    if name == "fifo":
        # Nobody holds the FIFO open for reading: the server looked at it and never opened it.
        with pytest.raises(OSError) as err:
            os.open(tree / "fifo", os.O_WRONLY | os.O_NONBLOCK)
        assert err.value.errno == errno.ENXIO


def test_a_directory_listing_skips_nothing_and_opens_nothing(server: ServeProcess) -> None:
    status, body = _get(server, "/")
    assert (status, body.decode().split()) == (200, ["big", "fifo", "initrd", "loop", "netboot.ipxe", "ping", "pong",
                                                     "socket"])


def test_an_idle_connection_is_closed_after_the_timeout(tree: Path) -> None:
    with served_with_timeouts(tree, idle_s=1, send_s=5) as server:
        for requests in (0, 1):  # a connection that never asks, and one kept alive after an answer
            with socket.create_connection(_address(server), timeout=CLIENT_TIMEOUT_S) as sock:
                if requests:
                    sock.sendall(b"GET /netboot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n")
                began = time.monotonic()
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
                waited = time.monotonic() - began
            assert received.endswith(SCRIPT if requests else b"")
            assert 0.9 <= waited < 10, f"closed after {waited:.2f} s"


def test_a_request_dripped_byte_by_byte_is_cut_off(tree: Path) -> None:
    """The timeout bounds the whole request head, not each read: a slow-loris client is closed too."""
    with served_with_timeouts(tree, idle_s=1, send_s=5) as server:
        with socket.create_connection(_address(server), timeout=CLIENT_TIMEOUT_S) as sock:
            began = time.monotonic()
            closed_after = None
            for byte in b"GET /netboot.ipxe HTTP/1.1\r\nX-Slow: " + b"x" * 1000:
                try:
                    sock.send(bytes([byte]))
                    readable, _, _ = select.select([sock], [], [], 0.2)  # a byte each 0.2 s
                    ended = bool(readable) and sock.recv(65536) == b""
                except OSError:
                    ended = True
                if ended:
                    closed_after = time.monotonic() - began
                    break
                if time.monotonic() - began > 10:
                    break
        assert closed_after is not None and 0.9 <= closed_after < 5, closed_after
        assert any("timed out" in line for line in _wait_for_line(server, "timed out", 10))
        assert _get(server, "/netboot.ipxe") == (200, SCRIPT)


def test_a_client_that_stops_reading_is_dropped(tree: Path, tmp_path: Path) -> None:
    with served_with_timeouts(tree, idle_s=30, send_s=1) as server:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            sock.settimeout(CLIENT_TIMEOUT_S)
            sock.connect(_address(server))
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            lines = _wait_for_line(server, "timed out", 15)  # and never reads
            assert any("timed out sending /big" in line for line in lines), lines
        assert _get(server, "/netboot.ipxe") == (200, SCRIPT)  # the server itself is fine


def test_a_small_file_kept_in_memory_is_served_anew_once_changed(tmp_path: Path) -> None:
    script = tmp_path / "netboot.ipxe"
    script.write_bytes(b"#!ipxe\necho one\n")
    time.sleep(SETTLED_NS / 1e9 + 0.2)  # settled: the server keeps it in memory from its first answer
    (tmp_path.parent / f"{tmp_path.name}-secret").write_bytes(b"outside\n")
    with netbuild_serve(str(tmp_path)) as server:
        conn = http.client.HTTPConnection(*_address(server), timeout=CLIENT_TIMEOUT_S)
        for _ in range(3):  # from disk, from the file kept in memory, then the whole answer kept for that head
            assert _get(server, "/netboot.ipxe", conn) == (200, b"#!ipxe\necho one\n")
        conn.request("GET", "/netboot.ipxe", headers={"Range": "bytes=7-10"})  # cut from what is in memory
        response = conn.getresponse()
        assert (response.status, response.read()) == (206, b"echo")
        with open(script, "r+b") as f:  # in place: same inode, same size, same second
            f.write(b"#!ipxe\necho two\n")
        assert _get(server, "/netboot.ipxe", conn) == (200, b"#!ipxe\necho two\n")
        time.sleep(SETTLED_NS / 1e9 + 0.2)
        for _ in range(3):
            assert _get(server, "/netboot.ipxe", conn) == (200, b"#!ipxe\necho two\n")
        script.unlink()  # swapped for a symlink out of the served directory: refused, kept or not
        script.symlink_to(f"../{tmp_path.name}-secret")
        assert _get(server, "/netboot.ipxe", conn)[0] == 403
        conn.close()


def _read_answer(stream: BinaryIO) -> tuple[int, bytes]:
    """One answer read off a connection as it comes (status, body), framed by its Content-Length."""
    status_line = stream.readline()
    fields = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), stream.read(int(fields["content-length"]))


def test_pipelined_requests_are_answered_in_order(server: ServeProcess, tree: Path) -> None:
    """Requests sent together, before any answer: small ones answered at once and a large one by
    sendfile, each after the one before, on the one connection."""
    initrd = (tree / "initrd").read_bytes()
    with socket.create_connection(_address(server), timeout=CLIENT_TIMEOUT_S) as sock:
        request = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request % b"netboot.ipxe" + request % b"initrd" + request % b"netboot.ipxe" + request % b"nothing"
                     + request % b"initrd" + b"GET /netboot.ipxe HTTP/1.1\r\nConnection: close\r\n\r\n")
        with sock.makefile("rb") as stream:
            answers = [_read_answer(stream) for _ in range(6)]
            assert stream.read() == b""  # and closed, as the last one asked
    assert answers == [(200, SCRIPT), (200, initrd), (200, SCRIPT), (404, b"404 Not Found: no such file\n"),
                       (200, initrd), (200, SCRIPT)]


def _children(pid: int, count: int) -> list[int]:
    """The processes pid has forked, once there are count of them (it forks after its banner)."""
    deadline = time.monotonic() + 10
    while len(found := _children_now(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _children_now(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # ppid
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; who reaps it is not the server's business


def _all_ended(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_running(pid) for pid in pids)


def test_worker_processes_answer_and_stop_with_the_command(tree: Path) -> None:
    with netbuild_serve(str(tree), "--workers", "3") as server:
        workers = _children(server.proc.pid, 2)
        assert len(workers) == 2  # and the command itself
        for _ in range(30):
            assert _get(server, "/netboot.ipxe") == (200, SCRIPT)
        lines = server.stop()
        assert (lines[-1], server.proc.returncode) == ("stopped", 0)
        assert lines.count(f'127.0.0.1 "GET /netboot.ipxe" 200 {len(SCRIPT)}') == 30  # no line lost or doubled
    assert _all_ended(workers)


def test_worker_processes_end_when_the_command_is_killed(tree: Path) -> None:
    with netbuild_serve(str(tree), "--workers", "2") as server:
        workers = _children(server.proc.pid, 1)
        assert len(workers) == 1
        server.proc.kill()  # SIGKILL: no chance to stop them itself
        server.proc.wait()
    assert _all_ended(workers)
