"""The event loop of one `netbuild serve` process: every connection's requests read and answered
by one thread, from what epoll reports ready.

A thread per connection costs a small answer most of its time: each system call releases the
interpreter lock and the next thread must take it, a futex hand-over and a context switch
(measured: 24 futex calls per request with 4 busy connections in one process, and a third of the
rate nginx reached on 8). Here the connections wait in one epoll set; what a ready one asked for
is answered at once when the answer is in memory (a script, a listing, an error: a non-blocking
send takes it whole), and the access-log line is written after it.

What takes longer is handed over to a thread of its own, for the rest of the connection
(builder/run/serve_wire.py, blocking, with the kernel's send and receive timeouts): a file sent by
sendfile (a kernel or an initrd, for which one more thread among a fleet's downloads costs
nothing) and an answer the client did not take whole, as a client that stops reading does.

The idle timeout is kept here for the connections in the loop: a request head must be complete
within the timeout of the connection's opening or of the previous answer. Every deadline is set
the same time ahead, so the connections ordered by their last deadline are ordered by deadline:
the loop looks only at the oldest one.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from builder.run.http_head import MAX_HEAD, BadRequest, end_of_head
from builder.run.serve_wire import Answer

_READ_SIZE = 65536
_POLL_S = 0.5  # how soon a loop told to stop notices it, as socketserver's serve_forever
_CLOSED_BY_PEER = (BrokenPipeError, ConnectionResetError)


class Answering(Protocol):
    """What the loop needs of the server: answers and the log (builder/run/serve.py)."""

    idle_s: float

    def answer(self, addr: str, head: bytes) -> Answer: ...

    def refuse_head(self, addr: str, error: BadRequest, received: bytes) -> Answer: ...

    def log(self, line: str) -> None: ...


# (connection, client address, what it sent beyond the answered request, the answer, bytes of it sent)
HandOver = Callable[[socket.socket, str, bytes, Answer, int], None]


@dataclass(slots=True)
class _Peer:
    sock: socket.socket
    addr: str
    deadline: float  # time.monotonic() by which its next request head must be complete
    received: bytearray  # of the next request head (and any pipelined after it)


class Loop:
    def __init__(self, listener: socket.socket, site: Answering, hand_over: HandOver) -> None:
        listener.setblocking(False)  # worker processes share it: those that lose a race go back to waiting
        self.socket = listener
        self._site = site
        self._hand_over = hand_over
        self._epoll = select.epoll()
        self._epoll.register(listener.fileno(), select.EPOLLIN)
        self._peers: dict[int, _Peer] = {}  # by descriptor, in the order of their deadlines
        self._stopping = False

    def serve_forever(self) -> None:
        listener = self.socket.fileno()
        poll = self._epoll.poll
        peers = self._peers
        while not self._stopping:
            timeout = _POLL_S
            if peers:
                timeout = min(timeout, max(0.0, next(iter(peers.values())).deadline - time.monotonic()))
            for fd, _events in poll(timeout):
                if fd == listener:
                    self._accept()
                else:
                    peer = peers.get(fd)
                    if peer is not None:
                        self._serve(fd, peer)
            if peers:
                self._expire()

    def shutdown(self) -> None:
        """Ask serve_forever (in another thread) to return; it does within _POLL_S."""
        self._stopping = True

    def close(self) -> None:
        for fd in list(self._peers):
            self._drop(fd)
        self._epoll.close()
        self.socket.close()

    def _accept(self) -> None:
        # One a turn: the other worker processes, woken for the same connections, get some too.
        try:
            sock, address = self.socket.accept()
        except OSError:  # taken by another process (EAGAIN), or gone before it was accepted
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms wait for a delayed ACK
        fd = sock.fileno()
        self._peers[fd] = _Peer(sock, address[0], time.monotonic() + self._site.idle_s, bytearray())
        self._epoll.register(fd, select.EPOLLIN)

    def _serve(self, fd: int, peer: _Peer) -> None:
        """What a ready connection asked for; whatever goes wrong ends that connection, not the loop
        (as a thread of its own would end, socketserver's way)."""
        try:
            self._readable(fd, peer)
        except OSError as e:  # e.g. EIO reading a file
            self._site.log(f"{peer.addr} {e.strerror or e}; connection closed")
            self._end(fd)
        except Exception:
            traceback.print_exc()
            self._end(fd)

    def _end(self, fd: int) -> None:
        if fd in self._peers:  # else handed over or dropped already
            self._drop(fd)

    def _readable(self, fd: int, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # reset by the client
            self._drop(fd)
            return
        if not data:
            self._drop(fd)
            return
        received = peer.received
        received += data
        while True:
            if received.startswith((b"\r", b"\n")):  # RFC 9112: ignore empty lines before a request
                del received[:len(received) - len(received.lstrip(b"\r\n"))]
            found = end_of_head(received)
            if found is None:
                if len(received) > MAX_HEAD:
                    error = BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"head larger than {MAX_HEAD} bytes")
                    self._send(fd, peer, self._site.refuse_head(peer.addr, error, bytes(received)))
                return
            end, rest = found
            head = bytes(received[:end])
            del received[:rest]
            if not self._send(fd, peer, self._site.answer(peer.addr, head)):
                return

    def _send(self, fd: int, peer: _Peer, answer: Answer) -> bool:
        """Send an answer, or hand the connection over to send it; whether it stays in the loop."""
        if answer.fd >= 0:
            self._give_away(fd, peer, answer, 0)
            return False
        data = answer.data
        try:
            sent = peer.sock.send(data) if data else 0
        except BlockingIOError:
            sent = 0
        except _CLOSED_BY_PEER:  # the client went away: not our error
            self._drop(fd)
            return False
        except OSError as e:
            self._site.log(f"{peer.addr} {e.strerror or e}; connection closed")
            self._drop(fd)
            return False
        if sent < len(data):
            self._give_away(fd, peer, answer, sent)
            return False
        if answer.log:
            self._site.log(answer.log)
        if not answer.keep:
            self._drop(fd)
            return False
        del self._peers[fd]  # to the end: the latest deadline
        peer.deadline = time.monotonic() + self._site.idle_s
        self._peers[fd] = peer
        return True

    def _expire(self) -> None:
        now = time.monotonic()
        expired = []
        for fd, peer in self._peers.items():
            if peer.deadline > now:
                break
            expired.append((fd, peer))
        for fd, peer in expired:
            if peer.received:  # an idle connection is closed quietly, half a request is reported
                self._site.log(f"{peer.addr} timed out: no whole request within {self._site.idle_s:g} s; "
                               "connection closed")
            self._drop(fd)

    def _give_away(self, fd: int, peer: _Peer, answer: Answer, sent: int) -> None:
        self._epoll.unregister(fd)
        del self._peers[fd]
        peer.sock.setblocking(True)
        self._hand_over(peer.sock, peer.addr, bytes(peer.received), answer, sent)

    def _drop(self, fd: int) -> None:
        peer = self._peers.pop(fd)
        self._epoll.unregister(fd)
        close(peer.sock)


def close(sock: socket.socket) -> None:
    """End a connection: what was sent goes first (FIN), as socketserver does it."""
    with contextlib.suppress(OSError):  # the client may be gone
        sock.shutdown(socket.SHUT_WR)
    sock.close()
