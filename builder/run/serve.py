"""An HTTP server for iPXE and for fleets booting at once: GET and HEAD of the files in one or more
OUT directories.

Its own, on an event loop (builder/run/serve_loop.py) rather than on http.server: that one
ignores Range, quietly maps a path that climbs out of the directory back inside it instead of
refusing it, parses headers slowly (builder/run/http_head.py says why) and has no timeouts. Here:
byte ranges (one range per request; several are answered with the whole file, which RFC 9110
allows), a 403 for any path that leaves the served directory (by `..` or by a symlink) and for
what is no regular file (builder/run/serve_tree.py), a correct Content-Length on every answer,
and one log line per request.

Made for a fleet powered on at once: a listen backlog of BACKLOG connections (http.server's is 5:
the rest of a storm of SYNs is dropped and retried after 1, 3, 7 s), small files sent with their
headers in one write (and a repeated request's whole answer kept, builder/run/serve_cache.py),
larger ones and their byte ranges by sendfile, an idle or slow request head closed
after IDLE_TIMEOUT_S and a client that stops reading dropped after SEND_TIMEOUT_S without progress
(builder/run/serve_wire.py), and, for the command, one process per core
(builder/run/serve_workers.py).

One directory is served at `/`; several are served side by side, each under its own name
(`/lab1/netboot.ipxe`, `/lab2/netboot.ipxe`), the way a menu (`netbuild menu`) expects them.
"""

from __future__ import annotations

import email.utils
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from builder.closure_json import clip
from builder.errors import NetbuildError
from builder.outcontract import TEXT_FILES
from builder.run.http_head import BadRequest, Request, parse, request_line
from builder.run.serve_cache import MAX_SIZE, KeptAnswers, SmallFiles
from builder.run.serve_loop import Loop, close
from builder.run.serve_tree import File, Listing, Missing, Refused, ServedTree, Unservable, open_file
from builder.run.serve_wire import Answer, HeadTimeout, Stalled, Truncated, Wire
from builder.run.serve_workers import serve_in_processes

__all__ = ["IDLE_TIMEOUT_S", "SEND_TIMEOUT_S", "ServedTree", "Server", "default_workers", "parse_range"]

Log = Callable[[str], None]

IDLE_TIMEOUT_S = 30.0  # for a whole request head, from the connection's opening or the previous answer
SEND_TIMEOUT_S = 60.0  # without any byte taken by the client
# Connections the kernel queues until they are accepted (it caps this at net.core.somaxconn,
# 4096 since Linux 5.4): a few hundred machines powered on together connect within milliseconds.
BACKLOG = 1024
MAX_WORKERS = 8
# Up to this size a file is kept in memory and sent with its headers in one write (one packet for
# a script); larger ones, and their byte ranges, by sendfile, without passing through Python.
SMALL_FILE = MAX_SIZE

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# UEFI HTTP Boot decides what it fetched by Content-Type first: application/efi for a program (a
# UKI), application/vnd.efi-iso and -img for media; anything else it refuses.
_CONTENT_TYPES = {".ipxe": "text/plain; charset=utf-8", ".json": "application/json", ".sh": "text/x-shellscript",
                  ".efi": "application/efi", ".iso": "application/vnd.efi-iso", ".img": "application/vnd.efi-img"}
_TEXT = "text/plain; charset=utf-8"


def _content_type(name: str) -> str:
    if name in TEXT_FILES:
        return _TEXT
    return _CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte span asked for by one `bytes=` range, None for 'send it all'.

    Raises ValueError for a range that cannot be satisfied (→ 416)."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # several ranges, or another unit: answering with the whole file is allowed
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise ValueError
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or (last and end < start):
        raise ValueError
    return start, min(end, size - 1)


class _Date:
    """The Date field, formatted once a second rather than for every answer."""

    def __init__(self) -> None:
        self._cached = (-1, "")  # (second, text), replaced whole: threads read it without a lock

    def now(self) -> str:
        second = int(time.time())
        cached = self._cached
        if cached[0] != second:
            cached = (second, email.utils.formatdate(second, usegmt=True))
            self._cached = cached
        return cached[1]


def _printable(text: str) -> str:
    """text from a request for a log line: cut short (a path may be 64 KiB), control characters
    escaped so that a request cannot forge log lines."""
    text = clip(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class _Site:
    """How a request is answered (the same in the loop and on a connection's own thread) and logged."""

    def __init__(self, tree: ServedTree, log: Log, idle_s: float, send_s: float) -> None:
        self.tree = tree
        self.log = log
        self.idle_s = idle_s
        self.send_s = send_s
        self.date = _Date()
        self.small = SmallFiles()
        self.kept = KeptAnswers()

    def answer(self, addr: str, head: bytes) -> Answer:
        """The answer to a complete request head (without its blank line)."""
        kept = self.kept.get(head)
        if kept is not None:  # asked before, and answered from a small file kept in memory
            if kept.still_valid():
                return Answer(kept.dated(self.date.now()), f"{addr} {kept.line}", kept.keep, kept.target)
            self.kept.forget(head)
        try:
            request = parse(head)
        except BadRequest as e:
            return self._error(addr, (1, 1), e.status, e.why, f'"{_printable(request_line(head))}"', True, False)
        what = f'"{request.method} {_printable(request.target)}"'
        if request.method not in ("GET", "HEAD"):
            return self._error(addr, request.version, HTTPStatus.NOT_IMPLEMENTED,
                               f"unsupported method {clip(request.method)!r}", what, True, False)
        # A body (which GET and HEAD do not have) is never read: the connection ends with the answer.
        keep = request.keep_alive and not request.has_body
        send_body = request.method == "GET"
        try:
            found = self.tree.locate(urlsplit(request.target).path)
            if isinstance(found, Listing):
                body = "".join(f"{name}\n" for name in found.names).encode()
                return self._bytes(addr, request.version, HTTPStatus.OK, body, _TEXT, what, send_body, keep)
            return self._file(addr, head, found, request, what, send_body, keep)
        except Refused:
            return self._error(addr, request.version, HTTPStatus.FORBIDDEN, "path leaves the served directory",
                               what, send_body, keep)
        except Missing:
            return self._error(addr, request.version, HTTPStatus.NOT_FOUND, "no such file", what, send_body, keep)
        except Unservable as e:
            return self._error(addr, request.version, HTTPStatus.FORBIDDEN, e.why, what, send_body, keep)

    def refuse_head(self, addr: str, error: BadRequest, received: bytes) -> Answer:
        """The answer to a request head that could not be read whole (too large)."""
        return self._error(addr, (1, 1), error.status, error.why, f'"{_printable(request_line(received))}"', True,
                           False)

    def _head(self, version: tuple[int, int], status: HTTPStatus, fields: str, keep: bool) -> bytes:
        if not keep:
            fields += "Connection: close\r\n"
        elif version < (1, 1):
            fields += "Connection: keep-alive\r\n"  # an HTTP/1.0 client keeps it only when told
        return (f"HTTP/1.1 {status.value} {status.phrase}\r\nServer: netbuild\r\nDate: {self.date.now()}\r\n"
                f"{fields}\r\n").encode("latin-1")

    def _file(self, addr: str, head: bytes, found: File, request: Request, what: str, send_body: bool,
              keep: bool) -> Answer:
        small = self.small
        cached = small.get(found.path, found.stat) if found.stat.st_size <= SMALL_FILE else None
        if cached is not None:
            from_memory = self._content(addr, request, what, send_body, keep, found.name, len(cached.data),
                                        cached.last_modified, cached.data, -1)
            if found.through is not None:  # found without a symlink: lstat tells whether it is still this file
                self.kept.put(head, found.through, found.path, found.stat, from_memory.data,
                              from_memory.log[len(addr) + 1:], from_memory.keep, from_memory.target)
            return from_memory
        fd, st = open_file(found)
        answer: Answer | None = None
        try:
            last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            data = None
            if st.st_size <= SMALL_FILE:  # read whole (a range is cut from it): sent with the headers
                data = os.pread(fd, st.st_size, 0)
                small.put(found.path, st, data, last_modified)
            answer = self._content(addr, request, what, send_body, keep, found.name, st.st_size, last_modified, data,
                                   fd)
            return answer
        finally:
            if answer is None or answer.fd != fd:  # else its sender closes it
                os.close(fd)

    def _content(self, addr: str, request: Request, what: str, send_body: bool, keep: bool, name: str, size: int,
                 last_modified: str, data: bytes | None, fd: int) -> Answer:
        """The answer for a file: all of it, the range asked for, or 416. The body is data (the
        whole file, in memory) when given, else sent from fd."""
        target = _printable(request.target)
        span: tuple[int, int] | None = None
        range_header = request.fields.get("range")
        if_range = request.fields.get("if-range")
        if range_header and (if_range is None or if_range == last_modified):
            try:
                span = parse_range(range_header, size)
            except ValueError:
                status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
                head = self._head(request.version, status, f"Content-Range: bytes */{size}\r\nContent-Length: 0\r\n",
                                  keep)
                return Answer(head, self._line(addr, what, status, 0, range_header), keep, target)
        start, end = span if span is not None else (0, size - 1)
        length = end - start + 1
        status = HTTPStatus.PARTIAL_CONTENT if span is not None else HTTPStatus.OK
        fields = (f"Content-Type: {_content_type(name)}\r\nContent-Length: {length}\r\n"
                  f"Accept-Ranges: bytes\r\nLast-Modified: {last_modified}\r\n")
        if span is not None:
            fields += f"Content-Range: bytes {start}-{end}/{size}\r\n"
        head = self._head(request.version, status, fields, keep)
        line = self._line(addr, what, status, length if send_body else 0, range_header if span else None)
        if not send_body or length <= 0:
            return Answer(head, line, keep, target)
        if data is not None:
            body = data[start:end + 1]
            if len(body) != length:
                return Answer(b"", f"{addr} {target} got shorter while being sent; connection closed", False, target)
            return Answer(head + body, line, keep, target)  # one write, one packet for a script
        return Answer(head, line, keep, target, fd, start, length)

    def _bytes(self, addr: str, version: tuple[int, int], status: HTTPStatus, body: bytes, content_type: str,
               what: str, send_body: bool, keep: bool) -> Answer:
        head = self._head(version, status, f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n", keep)
        return Answer(head + body if send_body else head, self._line(addr, what, status, len(body) if send_body else 0,
                                                                     None), keep, what)

    def _error(self, addr: str, version: tuple[int, int], status: HTTPStatus, why: str, what: str, send_body: bool,
               keep: bool) -> Answer:
        return self._bytes(addr, version, status, f"{status.value} {status.phrase}: {why}\n".encode(), _TEXT, what,
                           send_body, keep)

    @staticmethod
    def _line(addr: str, what: str, status: HTTPStatus, sent: int, byte_range: str | None) -> str:
        extra = f" {_printable(byte_range)}" if byte_range else ""
        return f"{addr} {what} {status.value} {sent}{extra}"


class _Connection:
    """A connection on a thread of its own, handed over by the loop: requests answered in turn,
    blocking, until it closes, idles or misbehaves."""

    def __init__(self, site: _Site, sock: socket.socket, addr: str, received: bytes) -> None:
        self.site = site
        self.sock = sock
        self.addr = addr
        self.wire = Wire(sock, idle_s=site.idle_s, send_s=site.send_s, received=received)

    def run(self, answer: Answer, sent: int) -> None:
        """Send the rest of answer (of which `sent` bytes are gone), then answer what comes next."""
        try:
            if not self._deliver(answer, sent):
                return
            while (following := self._next_answer()) is not None and self._deliver(following, 0):
                pass
        except HeadTimeout:
            self.site.log(f"{self.addr} timed out: no whole request within {self.site.idle_s:g} s; "
                          "connection closed")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-answer (iPXE cancelled, curl interrupted): not our error
        except OSError as e:  # e.g. EIO reading a file: this connection ends, the server goes on
            self.site.log(f"{self.addr} {e.strerror or e}; connection closed")
        finally:
            close(self.sock)

    def _next_answer(self) -> Answer | None:
        try:
            head = self.wire.next_head()
        except BadRequest as e:  # a head too large to be read whole
            return self.site.refuse_head(self.addr, e, self.wire.pending())
        return None if head is None else self.site.answer(self.addr, head)

    def _deliver(self, answer: Answer, sent: int) -> bool:
        """Send an answer and log it; whether the connection stays open for the next."""
        try:
            self.wire.deliver(answer, sent)
        except Stalled as e:
            self.site.log(f"{self.addr} timed out sending {answer.target}: the client took nothing "
                          f"for {self.site.send_s:g} s after {e.sent} bytes of the body; connection closed")
            return False
        except Truncated:
            self.site.log(f"{self.addr} {answer.target} got shorter while being sent; connection closed")
            return False
        if answer.log:
            self.site.log(answer.log)
        return answer.keep


def _listen(bind: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    try:
        # A restarted server gets its port back at once (as http.server's and socketserver's do).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise NetbuildError(f"cannot listen on {bind}:{port}: {e.strerror}") from None
    return sock


def default_workers() -> int:
    """A process per core, as nginx's `worker_processes auto`; at most MAX_WORKERS (each is a
    Python interpreter of its own, about 20 MB)."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


class Server:
    """A running server; `url` is where the host reaches it. Stop it with close()."""

    def __init__(self, directories: list[Path], *, bind: str = "127.0.0.1", port: int = 0, log: Log,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, send_timeout_s: float = SEND_TIMEOUT_S) -> None:
        tree = ServedTree.of(directories)
        site = _Site(tree, log, idle_timeout_s, send_timeout_s)
        listener = _listen(bind, port)

        def hand_over(sock: socket.socket, addr: str, received: bytes, answer: Answer, sent: int) -> None:
            connection = _Connection(site, sock, addr, received)
            # daemon: open connections do not keep the process alive when it is told to stop
            threading.Thread(target=connection.run, args=(answer, sent), name="netbuild-http-connection",
                             daemon=True).start()

        self._loop = Loop(listener, site, hand_over)
        self.tree = tree
        self.bind = bind
        self.port: int = listener.getsockname()[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def start(self) -> Server:
        """Serve in a background thread (for `netbuild boot --via http`)."""
        self._thread = threading.Thread(target=self._loop.serve_forever, name="netbuild-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, workers: int = 1) -> None:
        """Serve until interrupted (for `netbuild serve`), in this process and workers - 1 forked
        ones (builder/run/serve_workers.py); fork before any thread is started."""
        serve_in_processes(self._loop, workers)

    def stop(self) -> None:
        """Make serve_forever return (safe in a signal handler): it finishes the answer it is at,
        log line included, and returns within the event loop's poll interval."""
        self._loop.shutdown()

    def close(self) -> None:
        if self._thread is not None:
            self._loop.shutdown()
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
