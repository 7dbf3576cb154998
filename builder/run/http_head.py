"""An HTTP/1.x request head (request line and header fields), parsed for `netbuild serve`.

Written here rather than taken from http.server, which parses the fields with the email package:
that costs most of the time of a small answer (a 450-byte netboot.ipxe), and a fleet's machines
send nothing it would be needed for — iPXE, UEFI HTTP Boot and curl send a request line and a few
`Name: value` lines. What RFC 9112 asks of a server is kept: a malformed line or field, an
obsolete line folding and a field name with white space are refused (400), a head larger than
http.server allows is refused (431), HTTP/2 and later get 505, HTTP/1.0 closes unless it asks for
keep-alive and HTTP/1.1 keeps the connection unless it asks to close.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD = 65536  # bytes, request line and fields together: http.server's limit for one line
MAX_FIELDS = 100  # http.server's limit
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\s]+) HTTP/(\d)\.(\d)")
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class BadRequest(Exception):
    """A request the server answers with an error status and then closes the connection on."""

    def __init__(self, status: HTTPStatus, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # as sent (latin-1, as http.server decodes it)
    version: tuple[int, int]
    fields: Mapping[str, str]  # lower-case names; of a repeated field the first, as http.server's get() gives
    keep_alive: bool  # what the client asked for
    has_body: bool  # a body follows the head (never read: GET and HEAD have none)


def end_of_head(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """(end of the head, start of what follows) in buffer, None if it is not complete yet.
    Lines may end in a bare LF, which RFC 9112 lets a server accept (as http.server does)."""
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n", 0, crlf if crlf >= 0 else len(buffer))
    if lf >= 0:
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 4
    return None


def request_line(head: bytes) -> str:
    """The head's first line, for a log line about a request that could not be parsed."""
    return head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")


def parse(head: bytes) -> Request:
    """The request in a complete head (without its blank line); raises BadRequest."""
    if len(head) > MAX_HEAD:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"head larger than {MAX_HEAD} bytes")
    lines = head.split(b"\n")
    match = _REQUEST_LINE.fullmatch(lines[0].rstrip(b"\r"))
    if match is None:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, major, minor = match.groups()
    version = (int(major), int(minor))
    if version[0] >= 2:
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"HTTP/{version[0]}.{version[1]}")
    if version[0] < 1:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"HTTP/{version[0]}.{version[1]}")
    if len(lines) - 1 > MAX_FIELDS:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {MAX_FIELDS} header fields")
    fields: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        name, colon, value = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):  # also: a folded line, a space before the colon
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header field")
        fields.setdefault(name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1"))
    tokens = {t.strip().lower() for t in fields.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version >= (1, 1) else "keep-alive" in tokens
    has_body = "transfer-encoding" in fields or fields.get("content-length", "0").strip() not in ("", "0")
    return Request(method.decode("ascii"), target.decode("latin-1"), version, fields, keep_alive, has_body)
