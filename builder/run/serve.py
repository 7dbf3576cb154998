"""An HTTP server for iPXE: GET and HEAD of the files in one or more OUT directories.

The standard library's http.server does the protocol; its SimpleHTTPRequestHandler does not: it
ignores Range, and it quietly maps a path that climbs out of the directory back inside it instead of
refusing it. So the handler here is our own, on BaseHTTPRequestHandler: byte ranges (one range per
request; several are answered with the whole file, which RFC 9110 allows), a 403 for any path that
leaves the served directory (by `..` or by a symlink), a correct Content-Length on every answer,
and one log line per request.

One directory is served at `/`; several are served side by side, each under its own name
(`/lab1/netboot.ipxe`, `/lab2/netboot.ipxe`), the way a menu (`netbuild menu`) expects them.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from builder.errors import NetbuildError
from builder.outcontract import TEXT_FILES

Log = Callable[[str], None]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# UEFI HTTP Boot decides what it fetched by Content-Type first: application/efi for a program (a
# UKI), application/vnd.efi-iso and -img for media; anything else it refuses.
_CONTENT_TYPES = {".ipxe": "text/plain; charset=utf-8", ".json": "application/json", ".sh": "text/x-shellscript",
                  ".efi": "application/efi", ".iso": "application/vnd.efi-iso", ".img": "application/vnd.efi-img"}


@dataclass(frozen=True)
class ServedTree:
    """What the server exposes: URL prefix ('' for the root) → real directory."""

    roots: Mapping[str, Path]

    @classmethod
    def of(cls, directories: list[Path]) -> ServedTree:
        for d in directories:
            if not d.is_dir():
                raise NetbuildError(f"{d}: not a directory")
        if len(directories) == 1:
            return cls({"": directories[0].resolve()})
        roots: dict[str, Path] = {}
        for d in directories:
            name = d.resolve().name
            if name in roots:
                raise NetbuildError(
                    f"{d}: another directory is also named {name!r}; directories served side by side need "
                    "distinct names"
                )
            roots[name] = d.resolve()
        return cls(roots)

    def locate(self, url_path: str) -> tuple[Path | None, list[str] | None]:
        """(file or directory, None) for a path inside a served directory; (None, names) for the
        listing of `/` when several directories are served; raises _Refused or _Missing otherwise."""
        segments = [unquote(s) for s in url_path.split("/") if s]
        if any(s in (".", "..") or "/" in s or "\0" in s for s in segments):
            raise _Refused
        if "" in self.roots:
            root, rest = self.roots[""], segments
        elif not segments:
            return None, [f"{name}/" for name in sorted(self.roots)]
        elif segments[0] in self.roots:
            root, rest = self.roots[segments[0]], segments[1:]
        else:
            raise _Missing
        candidate = root.joinpath(*rest)
        if not os.path.lexists(candidate):
            raise _Missing
        # A symlink inside OUT that points out of it is refused like `..`: the client named a file
        # outside what was meant to be served.
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root):
            raise _Refused
        if not resolved.exists():
            raise _Missing
        return resolved, None


class _Refused(Exception):
    pass


class _Missing(Exception):
    pass


def _content_type(path: Path) -> str:
    if path.name in TEXT_FILES:
        return "text/plain; charset=utf-8"
    return _CONTENT_TYPES.get(path.suffix, "application/octet-stream")


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: iPXE fetches script, kernel and initrd in a row
    server_version = "netbuild"
    tree: ServedTree
    log: Log

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        url_path = urlsplit(self.path).path
        try:
            found, listing = self.tree.locate(url_path)
        except _Refused:
            self._error(HTTPStatus.FORBIDDEN, "path leaves the served directory", send_body)
            return
        except _Missing:
            self._error(HTTPStatus.NOT_FOUND, "no such file", send_body)
            return
        if listing is None and found is not None and found.is_dir():
            listing = sorted(p.name + ("/" if p.is_dir() else "") for p in found.iterdir())
        if listing is not None:
            body = "".join(f"{name}\n" for name in listing).encode()
            self._send_bytes(HTTPStatus.OK, body, "text/plain; charset=utf-8", send_body)
            return
        assert found is not None
        self._send_file(found, send_body)

    def _send_file(self, path: Path, send_body: bool) -> None:
        try:
            f = open(path, "rb")  # noqa: SIM115 — closed below, after sendfile
        except OSError as e:
            self._error(HTTPStatus.FORBIDDEN, e.strerror or "cannot open", send_body)
            return
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                self._error(HTTPStatus.FORBIDDEN, "not a regular file", send_body)
                return
            size = st.st_size
            last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            span: tuple[int, int] | None = None
            range_header = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if range_header and (if_range is None or if_range == last_modified):
                try:
                    span = parse_range(range_header, size)
                except ValueError:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._log_request(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, 0, range_header)
                    return
            start, end = span if span is not None else (0, size - 1)
            length = end - start + 1
            status = HTTPStatus.PARTIAL_CONTENT if span is not None else HTTPStatus.OK
            self.send_response(status)
            self.send_header("Content-Type", _content_type(path))
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", last_modified)
            if span is not None:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if send_body and length > 0:
                self.connection.sendfile(f, start, length)
            self._log_request(status, length if send_body else 0, range_header if span else None)

    def _send_bytes(self, status: HTTPStatus, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)
        self._log_request(status, len(body) if send_body else 0, None)

    def _error(self, status: HTTPStatus, why: str, send_body: bool) -> None:
        self._send_bytes(status, f"{status.value} {status.phrase}: {why}\n".encode(), "text/plain; charset=utf-8",
                         send_body)

    def _log_request(self, status: HTTPStatus, sent: int, byte_range: str | None) -> None:
        extra = f" {byte_range}" if byte_range else ""
        path = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in self.path)  # no log injection
        self.log(f'{self.client_address[0]} "{self.command} {path}" {status.value} {sent}{extra}')

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _log_request writes the one line per request, with what was really sent

    def log_message(self, format: str, *args: object) -> None:
        # What http.server itself reports: a malformed request, an unsupported method.
        self.log(f"{self.client_address[0]} {format % args}")

    def handle(self) -> None:
        # The client went away mid-transfer (iPXE cancelled, curl interrupted): not our error.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()


class _ThreadingHTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Server:
    """A running server; `url` is where the host reaches it. Stop it with close()."""

    def __init__(self, directories: list[Path], *, bind: str = "127.0.0.1", port: int = 0, log: Log) -> None:
        tree = ServedTree.of(directories)
        handler = type("Handler", (_Handler,), {"tree": tree, "log": staticmethod(log)})
        server_class = _ThreadingHTTPServer6 if ":" in bind else ThreadingHTTPServer
        try:
            self._httpd = server_class((bind, port), handler)
        except OSError as e:
            raise NetbuildError(f"cannot listen on {bind}:{port}: {e.strerror}") from None
        self._httpd.daemon_threads = True
        self.tree = tree
        self.bind = bind
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def start(self) -> Server:
        """Serve in a background thread (for `netbuild boot --via http`)."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="netbuild-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
