"""The http role's executor kept small while idle (decision 0025).

The http role forks the executor from its own process while still root, before it drops
root and before it imports its HTTP stack (uvicorn, Starlette, Jinja2): the two share the
interpreter's pages (``gc.freeze`` first, so the collector does not copy them). Idle, the
executor holds only its end of the channel and waits. When a request arrives it forks a
child that imports the CLI's operations (cli/adminops.py, SQLAlchemy), answers that burst of
requests and exits once the channel has been silent ``IDLE_S`` seconds with no request
partly read; the next request forks a new child. The channel protocol (httpd/channel.py)
is unchanged: the role sees one executor.

Invariants: only one of the executor and its child reads the channel at a time (the
executor waits for the child); a child that fails ends the executor, which closes the
channel, so the role answers 503 and exits and the supervisor starts both again; the
executor and its child die with their parent (PR_SET_PDEATHSIG) and keep no other
descriptor of the role's (the listening socket, the ready pipe).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Iterator

from qtoaster.core.home import Home
from qtoaster.httpd.channel import MAX_LINE

IDLE_S = 30.0  # a burst's child exits after this long without a request
PR_SET_PDEATHSIG = 1
log = logging.getLogger("qtoaster.http-admin")


def start_executor(home: Home, idle: float = IDLE_S) -> socket.socket:
    """Fork the executor on a socketpair; the caller's end of the pair."""
    mine, theirs = socket.socketpair()
    parent = os.getpid()
    gc.freeze()  # what exists now stays shared with the executor: no collection touches it
    pid = os.fork()
    if pid == 0:  # the executor: never returns into the caller's code
        status = 1
        try:
            mine.close()
            _child_of(parent, keep=theirs.fileno())
            status = serve_idle(home, theirs, idle)
        except BaseException:
            log.exception("http the role's executor failed")
        finally:
            _exit(status)
    theirs.close()
    return mine


def serve_idle(home: Home, sock: socket.socket, idle: float) -> int:
    """Until the role closes the channel: wait for a request, then fork the child that
    answers it and the requests that follow; 0 when the channel closed, 1 when a child
    failed."""
    me = os.getpid()
    while True:
        select.select([sock], [], [])
        if not sock.recv(1, socket.MSG_PEEK):
            return 0  # the role closed the channel
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                _child_of(me, keep=sock.fileno())
                from qtoaster.cli.adminops import serve_executor

                serve_executor(home, sock, idle=idle)
                status = 0
            except BaseException:
                log.exception("http the role's executor child failed")
            finally:
                _exit(status)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            log.error("http the role's executor child ended with status %#x", status)
            return 1


def requests(sock: socket.socket, idle: float | None) -> Iterator[bytes]:
    """The channel's lines; one longer than MAX_LINE comes as its first MAX_LINE bytes
    (not JSON: answered 400) and the rest of it is dropped, so answers stay in step."""
    buf, skipping, scanned = bytearray(), False, 0  # no newline in buf[:scanned]
    while True:
        end = buf.find(b"\n", scanned)
        scanned = 0
        if skipping:  # the rest of an over-long line: dropped up to its newline
            if end >= 0:
                del buf[: end + 1]
                skipping = False
                continue
            buf.clear()
        elif 0 <= end < MAX_LINE:
            line = bytes(buf[: end + 1])
            del buf[: end + 1]
            yield line
            continue
        elif len(buf) >= MAX_LINE:
            yield bytes(buf[:MAX_LINE])
            del buf[:MAX_LINE]
            skipping = True
            continue
        between = not buf and not skipping  # no request partly read
        if idle is not None and between and not select.select([sock], [], [], idle)[0]:
            return
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        scanned = len(buf)
        buf += chunk


def _child_of(parent: int, keep: int) -> None:
    """In a forked child: die with ``parent``, keep only stdio and ``keep`` open."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
        _exit(0)
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def _exit(status: int) -> None:
    """Leave a forked process without running the caller's cleanup (atexit, finally)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
