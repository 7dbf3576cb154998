"""The parts of `netbuild serve` below the socket: request heads as clients write them (and as they
must not), the small-file memory and when it must forget, and the served tree's verdicts on what
is no regular file. The server itself, over real connections: tests/integration/test_serve*.py."""

from __future__ import annotations

import os
import socket
import time
from http import HTTPStatus
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli.netboot import serve_command
from builder.run.http_head import MAX_HEAD, BadRequest, end_of_head, parse
from builder.run.serve import IDLE_TIMEOUT_S, SEND_TIMEOUT_S
from builder.run.serve_cache import MAX_ANSWER, MAX_ANSWERS, MAX_ENTRIES, SETTLED_NS, KeptAnswers, SmallFiles
from builder.run.serve_tree import File, Listing, Missing, Refused, ServedTree, Unservable


def test_what_ipxe_and_curl_send() -> None:
    ipxe = parse(b"GET /netboot.ipxe HTTP/1.1\r\nUser-Agent: iPXE/1.21.1+\r\nHost: 10.0.2.2:8080\r\n"
                 b"Range: bytes=0-99")
    assert (ipxe.method, ipxe.target, ipxe.version, ipxe.keep_alive, ipxe.has_body) == (
        "GET", "/netboot.ipxe", (1, 1), True, False)
    assert ipxe.fields["range"] == "bytes=0-99" and ipxe.fields["host"] == "10.0.2.2:8080"
    assert not parse(b"HEAD / HTTP/1.1\r\nConnection: close").keep_alive
    assert not parse(b"GET / HTTP/1.0").keep_alive
    assert parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 3").has_body
    assert parse(b"GET / HTTP/1.1\nHost: x").fields == {"host": "x"}  # bare LF line ends
    assert parse(b"GET / HTTP/1.1\r\nRange: a\r\nRange: b").fields["range"] == "a"  # the first, as http.server


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"garbage", HTTPStatus.BAD_REQUEST),
        (b"GET /", HTTPStatus.BAD_REQUEST),  # HTTP/0.9
        (b"GET / HTTP/0.9", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/2.0", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
        (b"GET  / HTTP/1.1", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost : x", HTTPStatus.BAD_REQUEST),  # white space before the colon
        (b"GET / HTTP/1.1\r\nX-A: 1\r\n  folded", HTTPStatus.BAD_REQUEST),  # obsolete line folding
        (b"GET / HTTP/1.1\r\nno colon", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1" + b"\r\nX: y" * 101, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
        (b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
    ],
)
def test_malformed_heads_are_refused(head: bytes, status: HTTPStatus) -> None:
    with pytest.raises(BadRequest) as err:
        parse(head)
    assert err.value.status == status


def test_end_of_head() -> None:
    assert end_of_head(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    assert end_of_head(b"GET / HTTP/1.1\r\n\r\nGET /next") == (14, 18)
    assert end_of_head(b"GET / HTTP/1.1\n\nGET /next") == (14, 16)


def _stat(path: Path, *, ctime_ns: int | None = None) -> os.stat_result:
    """The file's stat, with the ctime the test says (no one can set a file's own)."""
    st = os.stat(path)
    if ctime_ns is None:
        return st
    return os.stat_result(tuple(st)[:10], {"st_atime_ns": st.st_atime_ns, "st_mtime_ns": st.st_mtime_ns,
                                           "st_ctime_ns": ctime_ns})


def test_a_small_file_is_kept_only_while_unchanged(tmp_path: Path) -> None:
    f = tmp_path / "netboot.ipxe"
    f.write_bytes(b"#!ipxe\n")
    old = time.time_ns() - 2 * SETTLED_NS
    small = SmallFiles()
    small.put(str(f), _stat(f), b"#!ipxe\n", "date")
    assert small.get(str(f), _stat(f)) is None  # just written: its ctime may not move on the next write
    st = _stat(f, ctime_ns=old)
    small.put(str(f), st, b"#!ipxe\n", "date")
    cached = small.get(str(f), st)
    assert cached is not None and (cached.data, cached.last_modified) == (b"#!ipxe\n", "date")
    assert small.get(str(f), _stat(f, ctime_ns=old + 1)) is None  # written to since
    changed = _stat(f, ctime_ns=old + 2)
    small.put(str(f), changed, b"#!ipx", "date")  # fewer bytes than its size: read while it changed
    assert small.get(str(f), changed) is None


def test_the_memory_is_bounded(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"x")
    st = _stat(f, ctime_ns=time.time_ns() - 2 * SETTLED_NS)
    small = SmallFiles()
    for i in range(MAX_ENTRIES + 10):
        small.put(f"{f}{i}", st, b"x", "date")
    assert small.get(f"{f}0", st) is None and small.get(f"{f}{MAX_ENTRIES + 9}", st) is not None
    assert len(small._entries) == MAX_ENTRIES


_ANSWER = (b"HTTP/1.1 200 OK\r\nServer: netbuild\r\nDate: Tue, 01 Dec 2026 19:23:13 GMT\r\nContent-Length: 7\r\n\r\n"
           b"#!ipxe\n")


def test_a_kept_answer_holds_while_its_file_and_the_way_to_it_are_unchanged(tmp_path: Path) -> None:
    lab = tmp_path / "lab1"
    lab.mkdir()
    f = lab / "netboot.ipxe"
    f.write_bytes(b"#!ipxe\n")
    head = b"GET /lab1/netboot.ipxe HTTP/1.1\r\nHost: x"
    answers = KeptAnswers()
    answers.put(head, (str(lab),), str(f), os.lstat(f), _ANSWER, '"GET /lab1/netboot.ipxe" 200 7', True, "/x")
    kept = answers.get(head)
    assert kept is not None and kept.still_valid() and answers.get(head + b"\r\nRange: bytes=0-1") is None
    assert kept.dated("Tue, 01 Dec 2026 19:23:13 GMT") == _ANSWER
    assert kept.dated("Tue, 01 Dec 2026 19:23:14 GMT") == _ANSWER.replace(b":13 GMT", b":14 GMT")
    os.utime(f)  # written to, touched, chmod-ed: its ctime moves
    assert not kept.still_valid()
    answers.put(head, (str(lab),), str(f), os.lstat(f), _ANSWER, "", True, "/x")
    assert answers.get(head) is not kept and answers.get(head).still_valid()  # type: ignore[union-attr]
    lab.rename(tmp_path / "old")  # a directory on the way swapped for a symlink (to the same file)
    (tmp_path / "lab1").symlink_to("old")
    assert not answers.get(head).still_valid()  # type: ignore[union-attr]
    answers.forget(head)
    assert answers.get(head) is None


def test_kept_answers_are_bounded(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"x")
    answers = KeptAnswers()
    answers.put(b"GET /big", (), str(f), os.lstat(f), _ANSWER + bytes(MAX_ANSWER), "", True, "/big")
    assert answers.get(b"GET /big") is None  # too large to keep a copy of for every head asking
    for i in range(MAX_ANSWERS + 10):
        answers.put(b"GET /%d" % i, (), str(f), os.lstat(f), _ANSWER, "", True, "/")
    assert answers.get(b"GET /0") is None and answers.get(b"GET /%d" % (MAX_ANSWERS + 9)) is not None
    assert len(answers._entries) == MAX_ANSWERS


def test_the_tree_refuses_what_is_no_regular_file(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    out = tmp_path / "out"
    (out / "netboot.ipxe").write_text("#!ipxe\n")
    (out / "loop").symlink_to("loop")
    (out / "dangling").symlink_to("nothing")
    (out / "escape").symlink_to("../secret")
    (out / "dir").mkdir()
    os.mkfifo(out / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(out / "socket"))
    tree = ServedTree.of([out])
    found = tree.locate("/netboot.ipxe")
    assert isinstance(found, File) and found.name == "netboot.ipxe" and found.stat.st_size == 7
    assert tree.locate("/dir/") == Listing([])
    for path, outcome in [("/loop", Unservable), ("/fifo", Unservable), ("/socket", Unservable),
                          ("/loop/x", Unservable), ("/dangling", Missing), ("/missing", Missing),
                          ("/netboot.ipxe/x", Missing), ("/escape", Refused), ("/%2e%2e/x", Refused)]:
        with pytest.raises(outcome):
            tree.locate(path)
    with pytest.raises(Unservable) as err:
        tree.locate("/fifo")
    assert err.value.why == "not a regular file (a FIFO)"


def test_the_help_states_the_timeouts() -> None:
    text = " ".join(CliRunner().invoke(serve_command, ["--help"]).output.split())
    assert f"idle for {IDLE_TIMEOUT_S:g} s" in text and f"nothing for {SEND_TIMEOUT_S:g} s" in text
