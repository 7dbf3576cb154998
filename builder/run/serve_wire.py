"""One client connection of `netbuild serve` on a thread of its own (builder/run/serve_loop.py hands
it over for a large file or a client that does not take an answer at once): reading request heads
and sending answers, each bounded in time, so that no client can hold a thread for ever.

- A request head must arrive whole within the idle timeout of the connection's opening or of the
  previous answer: an idle kept-alive connection is closed, and so is one that drips a head a byte
  at a time (a per-read timeout would let that go on for ever).
- A send must make progress within the send timeout: a client that stops reading (a hung
  machine, a full window) is dropped; a slow one that keeps reading is served however long.

The timeouts are the kernel's (SO_RCVTIMEO, SO_SNDTIMEO on a blocking socket) rather than
Python's socket timeouts, which poll before every call: an extra system call on each read and
write, about a fifth of a small answer's cost (measured). A blocking os.sendfile then sends a whole file, or a whole
byte range, in one call, and the kernel's send timeout applies to each wait inside it.
TCP_NODELAY: Nagle's algorithm would hold back the last packet of an answer until the client's
delayed ACK of the one before (40 ms on Linux) — per answer, on a kept-alive connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass
from http import HTTPStatus

from builder.run.http_head import MAX_HEAD, BadRequest, end_of_head

_READ_SIZE = 65536
_NO_DATA = (BlockingIOError, TimeoutError)  # EAGAIN/EWOULDBLOCK: a kernel socket timeout ran out


class Stalled(Exception):
    """The client took nothing for the send timeout; `sent` bytes of the body had gone."""

    def __init__(self, sent: int) -> None:
        super().__init__(sent)
        self.sent = sent


class Truncated(Exception):
    """The file ended before the bytes the answer announced (it shrank while being sent)."""


class HeadTimeout(Exception):
    """Part of a request head came, then nothing more within the idle timeout."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request gets: data (the head, and the body when it is in memory), then, for a
    larger file, count bytes of the descriptor fd from offset (whoever sends it closes fd); and
    the access-log line, written once it is sent."""

    data: bytes
    log: str
    keep: bool  # the connection stays open for the next request
    target: str  # printable: for the line about an answer that could not be sent
    fd: int = -1
    offset: int = 0
    count: int = 0


def _timeval(seconds: float) -> bytes:
    """A struct timeval for SO_RCVTIMEO/SO_SNDTIMEO; at least a millisecond, as 0 means none at all."""
    micro = max(1000, round(seconds * 1_000_000))
    return struct.pack("@ll", micro // 1_000_000, micro % 1_000_000)


class Wire:
    def __init__(self, sock: socket.socket, *, idle_s: float, send_s: float, received: bytes = b"") -> None:
        self.sock = sock
        self.idle_s = idle_s
        sock.settimeout(None)  # blocking: the kernel's timeouts below bound every wait
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(send_s))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(idle_s))
        self._read_timeout = idle_s
        self._buffer = bytearray(received)  # what came before this Wire took the connection over

    def next_head(self) -> bytes | None:
        """The next request's head (without its blank line); None when the client closed the
        connection or left it idle. Raises HeadTimeout, or BadRequest for a head too large."""
        deadline = time.monotonic() + self.idle_s
        if self._read_timeout != self.idle_s:  # the last head's final read was cut short by its deadline
            self._set_read_timeout(self.idle_s)
        buffer = self._buffer
        while True:
            while bytes(buffer[:1]) in (b"\r", b"\n"):  # RFC 9112: ignore empty lines before a request
                del buffer[:1]
            found = end_of_head(buffer)
            if found is not None:
                end, rest = found
                head = bytes(buffer[:end])
                del buffer[:rest]
                return head
            if len(buffer) > MAX_HEAD:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"head larger than {MAX_HEAD} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if buffer and remaining < self._read_timeout:
                # A head has begun: the reads that complete it wait only until the deadline. (A read
                # for a new head waits the whole timeout already: no system call for that.)
                self._set_read_timeout(remaining)
            try:
                data = self.sock.recv(_READ_SIZE)
            except _NO_DATA:
                break
            except ConnectionResetError:
                return None
            if not data:
                return None
            buffer += data
        # The timeout ran out: an idle connection is closed quietly, half a request is reported.
        if buffer:
            raise HeadTimeout
        return None

    def pending(self) -> bytes:
        """What has been received of a head not yet complete."""
        return bytes(self._buffer)

    def _set_read_timeout(self, seconds: float) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        self._read_timeout = seconds

    def deliver(self, answer: Answer, sent: int = 0) -> None:
        """The answer, but for its first `sent` bytes of data (gone already); closes its fd.
        Raises Stalled or Truncated."""
        try:
            if answer.fd >= 0:
                self.send_with_file(answer.data[sent:], answer.fd, answer.offset, answer.count)
            elif sent < len(answer.data):
                self.send(answer.data[sent:])
        finally:
            if answer.fd >= 0:
                os.close(answer.fd)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except _NO_DATA:
            raise Stalled(0) from None

    def send_with_file(self, head: bytes, fd: int, offset: int, count: int) -> None:
        """head, then count bytes of the file from offset by sendfile (the kernel copies them from
        the page cache). Corked (TCP_CORK, nginx's tcp_nopush): the head shares a packet with the
        first bytes, and no partial packet goes out where sendfile's pieces meet, which
        TCP_NODELAY alone would send."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            self.send(head)
            self._send_file(fd, offset, count)
        finally:
            with contextlib.suppress(OSError):  # the client may be gone
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)  # and what is left goes now

    def _send_file(self, fd: int, offset: int, count: int) -> None:
        sent = 0
        out = self.sock.fileno()
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except _NO_DATA:
                raise Stalled(sent) from None
            if n == 0:
                raise Truncated
            sent += n
