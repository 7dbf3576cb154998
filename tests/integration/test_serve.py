"""`netbuild serve` answered by a real HTTP client (the standard library's http.client, which
checks framing: a wrong Content-Length breaks the next request on the same connection): GET, HEAD,
byte ranges, paths that leave OUT, missing files, several directories side by side, one log line
per request, and a quiet stop."""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.netboot import ServeProcess, netbuild_serve

pytestmark = pytest.mark.nix


@pytest.fixture(scope="module")
def served_out(built_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of OUT (the shared one stays untouched) with a symlink that points out of it."""
    out = tmp_path_factory.mktemp("serve") / "out"
    shutil.copytree(built_out, out)
    (out.parent / "secret").write_text("outside OUT\n")
    (out / "escape").symlink_to("../secret")
    (out / "inside").symlink_to("kernel-params")
    return out


@pytest.fixture
def server(served_out: Path) -> Iterator[ServeProcess]:
    with netbuild_serve(str(served_out)) as s:
        yield s


def _connection(server: ServeProcess) -> http.client.HTTPConnection:
    url = urlsplit(server.url)
    assert url.hostname == "127.0.0.1"  # the default --bind: not reachable from other machines
    return http.client.HTTPConnection(url.hostname, url.port, timeout=30)


def _request(conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_get_and_head_give_the_files_with_their_length(server: ServeProcess, served_out: Path) -> None:
    conn = _connection(server)  # one keep-alive connection for all: framing must be exact
    for name in ("netboot.ipxe", "initrd", "bzImage", "run-qemu"):
        data = (served_out / name).read_bytes()
        status, headers, body = _request(conn, "GET", f"/{name}")
        assert (status, body) == (200, data), name
        assert headers["content-length"] == str(len(data)) and headers["accept-ranges"] == "bytes"
        status, headers, body = _request(conn, "HEAD", f"/{name}")
        assert (status, headers["content-length"], body) == (200, str(len(data)), b""), name
    conn.close()
    expected = [
        f'127.0.0.1 "{method} /{name}" 200 {0 if method == "HEAD" else (served_out / name).stat().st_size}'
        for name in ("netboot.ipxe", "initrd", "bzImage", "run-qemu") for method in ("GET", "HEAD")
    ]
    assert server.wait_for_lines(9)[1:] == expected  # after the banner, one line per request
    assert server.stop()[9:] == ["stopped"] and server.proc.returncode == 0


@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=0-99", (0, 99)), ("bytes=1000-", (1000, None)), ("bytes=-10", (-10, None)),
     ("bytes=5-5", (5, 5)), ("bytes=100-99999999999", (100, None))],
)
def test_byte_ranges(server: ServeProcess, served_out: Path, header: str, span: tuple[int, int | None]) -> None:
    data = (served_out / "initrd").read_bytes()
    size = len(data)
    start = span[0] % size
    end = size - 1 if span[1] is None else span[1]
    conn = _connection(server)
    status, headers, body = _request(conn, "GET", "/initrd", {"Range": header})
    assert status == 206
    assert body == data[start:end + 1]
    assert headers["content-length"] == str(end - start + 1)
    assert headers["content-range"] == f"bytes {start}-{end}/{size}"
    # The connection is still in step after a partial answer.
    assert _request(conn, "HEAD", "/initrd")[1]["content-length"] == str(size)


def test_unsatisfiable_and_multiple_ranges(server: ServeProcess, served_out: Path) -> None:
    size = (served_out / "kernel-params").stat().st_size
    conn = _connection(server)
    status, headers, body = _request(conn, "GET", "/kernel-params", {"Range": f"bytes={size}-"})
    assert (status, headers["content-range"], headers["content-length"], body) == (416, f"bytes */{size}", "0", b"")
    # Several ranges at once: answered with the whole file, which HTTP allows.
    status, _, body = _request(conn, "GET", "/kernel-params", {"Range": "bytes=0-1,4-5"})
    assert (status, body) == (200, (served_out / "kernel-params").read_bytes())


@pytest.mark.parametrize("path", ["/../secret", "/%2e%2e/secret", "/escape", "/..%2fsecret"])
def test_paths_that_leave_out_are_refused(server: ServeProcess, path: str) -> None:
    status, headers, body = _request(_connection(server), "GET", path)
    assert status == 403, path
    assert b"outside" not in body and headers["content-length"] == str(len(body))


def test_a_symlink_inside_out_is_followed(server: ServeProcess, served_out: Path) -> None:
    status, _, body = _request(_connection(server), "GET", "/inside")
    assert (status, body) == (200, (served_out / "kernel-params").read_bytes())


def test_a_missing_file_is_404(server: ServeProcess) -> None:
    conn = _connection(server)
    status, headers, body = _request(conn, "GET", "/no-such-file")
    assert status == 404 and headers["content-length"] == str(len(body))
    assert _request(conn, "HEAD", "/no-such-file")[0] == 404
    assert server.wait_for_lines(3)[1:] == [f'127.0.0.1 "GET /no-such-file" 404 {len(body)}',
                                            '127.0.0.1 "HEAD /no-such-file" 404 0']


def test_several_directories_side_by_side(built_out: Path, served_out: Path, tmp_path: Path) -> None:
    other = tmp_path / "lab2"
    other.mkdir()
    (other / "netboot.ipxe").write_text("#!ipxe\necho lab2\n")
    with netbuild_serve(str(served_out), str(other)) as server:
        assert server.wait_for_lines(2) == [f"serving {served_out} at {server.url}out/",
                                            f"serving {other} at {server.url}lab2/"]
        conn = _connection(server)
        assert _request(conn, "GET", "/out/netboot.ipxe")[2] == (built_out / "netboot.ipxe").read_bytes()
        assert _request(conn, "GET", "/lab2/netboot.ipxe")[2] == b"#!ipxe\necho lab2\n"
        assert _request(conn, "GET", "/")[2] == b"lab2/\nout/\n"
        assert _request(conn, "GET", "/netboot.ipxe")[0] == 404
        assert _request(conn, "GET", "/lab2/../out/netboot.ipxe")[0] == 403


def test_bad_directories_are_refused(tmp_path: Path, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a" / "same").mkdir(parents=True)
    (tmp_path / "b" / "same").mkdir(parents=True)
    proc = run_netbuild("serve", str(tmp_path / "missing"), check=False)
    assert (proc.returncode, proc.stderr.decode()) == (1, f"error: {tmp_path / 'missing'}: not a directory\n")
    proc = run_netbuild("serve", str(tmp_path / "a" / "same"), str(tmp_path / "b" / "same"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (f"error: {tmp_path / 'b' / 'same'}: another directory is also named 'same'; "
                                    "directories served side by side need distinct names\n")
