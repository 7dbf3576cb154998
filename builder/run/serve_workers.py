"""`netbuild serve` on several processes sharing one listening socket, as nginx's workers do.

One Python process answers on one core at a time (the interpreter lock): small answers to many
machines at once are bound by it. So the command forks workers that accept from the same socket —
each connection is answered, whole, by the process whose accept() got it (in its event loop,
builder/run/serve_loop.py); the kernel queues the rest. The listening socket is non-blocking:
every process is woken for a new connection, and those that lose the race must go back to
waiting, not block in accept().

The parent serves too and owns the children: on its way out (SIGTERM, Ctrl-C) it stops them and
waits for them; each process stops between two answers, so every answer sent has its log line.
A child dies with its parent even if the parent is killed outright (SIGKILL):
PR_SET_PDEATHSIG. The command writes each log line whole and flushes it (one write), and a line
is shorter than PIPE_BUF (what it echoes is clipped), so the processes' lines do not mix, on a
pipe or in a file.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from typing import Protocol

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Serving(Protocol):
    def serve_forever(self) -> None: ...

    def shutdown(self) -> None: ...  # serve_forever returns soon after, having finished what it was doing


def serve_in_processes(httpd: Serving, workers: int) -> None:
    """httpd.serve_forever() here and in workers - 1 forked processes, until this one is stopped."""
    children: list[int] = []
    try:
        if workers > 1:
            _fork_workers(httpd, workers - 1, children)
        httpd.serve_forever()
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)


def _fork_workers(httpd: Serving, count: int, children: list[int]) -> None:
    # What is buffered now would be written again by every child.
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    # No SIGTERM or Ctrl-C between a fork and the child's own handlers (the parent's would run
    # the command's way out in the child), nor before the parent has noted the child to stop.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                _child(httpd, parent, mask)
            children.append(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _child(httpd: Serving, parent: int, mask: set[int | signal.Signals]) -> None:
    """A worker's whole life; it never returns into the caller's code (which would, e.g., print
    the command's own closing line)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    # Stopped between two answers, never between an answer and its log line (the default action
    # would end the process wherever it is).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: httpd.shutdown())
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    code = 0
    try:
        if os.getppid() == parent:  # else the parent is gone already, before prctl
            httpd.serve_forever()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        os._exit(code)
