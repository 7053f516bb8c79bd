"""Append one message to an mbox file, as qmail-local's mailfile() does (spec 16.3, mbox(5)).

What is written: ``From <sender> <ctime>`` (qmail's UFLINE), the caller's prefix
(Return-Path and Delivered-To lines), the message with every line matching ``>*From ``
given one more ``>`` (qmail's gfrom(), the reversible "mboxrd" quoting), a newline if the
last line lacked one, then one blank line.

Invariants:
- writers are serialised by an exclusive flock(2), held until the data is fsynced;
- the message is streamed line by line in bounded pieces, never held whole in memory;
- on any read or write error the file is truncated back to its size before the
  delivery (when we hold the lock, as qmail-local does), then OSError is raised;
- a lock not obtained within ``lock_timeout`` raises TimeoutError (an OSError subclass:
  catch it first), which qmail reports as ``SLOW_LOCK``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import BinaryIO

from qtoaster.core.envelope import encode

CHUNK = 64 * 1024
# qmail-local.c's texts for the caller's reports.
SLOW_LOCK = "File has been locked for 30 seconds straight. (#4.3.0)"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # time.struct_time.tm_wday order
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_LOCK_POLL_MAX = 0.1


def from_line(sender: str, when: float) -> bytes:
    """qmail-local's UFLINE: ``From <sender> <myctime>\\n``, UTC, day zero-padded.

    Spaces, tabs and newlines in the sender become ``-`` so the line stays parseable;
    the empty (bounce) sender is written ``MAILER-DAEMON``.
    """
    raw = encode(sender) if sender else b"MAILER-DAEMON"
    raw = raw.replace(b" ", b"-").replace(b"\t", b"-").replace(b"\n", b"-")
    t = time.gmtime(when)
    stamp = (
        f"{_DAYS[t.tm_wday]} {_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year}\n"
    )
    return b"From " + raw + b" " + stamp.encode("ascii")


def deliver_mbox(
    path: Path,
    message: BinaryIO,
    *,
    sender: str,
    prefix: bytes,
    now: float | None = None,
    lock_timeout: float = 30.0,
) -> None:
    """Append the rest of ``message`` to the mbox at ``path`` (created 0600 if missing)."""
    when = time.time() if now is None else now
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        locked = _lock(fd, lock_timeout)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            out = _Output(fd)
            out.put(from_line(sender, when) + prefix)
            _copy_quoted(message, out)
            out.put(b"\n")
            out.flush()
            os.fsync(fd)
        except OSError:
            # Without the lock another writer may have appended after us: leave it be.
            if locked:
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)  # releases the flock


def _lock(fd: int, timeout: float) -> bool:
    """Take an exclusive flock within ``timeout`` seconds; False if locking is unsupported.

    qmail-local waits in a blocking lock_ex() under a 30 s alarm; an alarm only works in
    the main thread, so we poll a non-blocking lock with a short, growing pause.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return False  # e.g. ENOLCK on NFS: qmail-local then writes unlocked
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(errno.ETIMEDOUT, SLOW_LOCK)
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _LOCK_POLL_MAX)


class _Output:
    """A write buffer over ``fd`` whose pending bytes are dropped, not flushed, on error."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()

    def put(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        data, self._buffer = self._buffer, bytearray()
        _write_all(self._fd, bytes(data))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_quoted(source: BinaryIO, out: _Output) -> None:
    """Copy ``source`` with gfrom() quoting, ending it with a newline.

    A line is read in pieces of at most CHUNK bytes; only the start of a line is
    examined: its run of ``>`` is counted (not kept) until the next bytes decide.
    """
    at_start = True
    while piece := source.readline(CHUNK):
        if at_start:
            piece = _quote_line_start(piece, source, out)
        out.put(piece)
        at_start = piece.endswith(b"\n")
    if not at_start:
        out.put(b"\n")


def _quote_line_start(piece: bytes, source: BinaryIO, out: _Output) -> bytes:
    """Write the ``>`` run opening a line (one more if ``From `` follows); the rest."""
    gts = 0
    rest = piece.lstrip(b">")
    gts += len(piece) - len(rest)
    # Read on while undecided: the line so far is '>'s and fewer than 5 other bytes.
    while len(rest) < 5 and not rest.endswith(b"\n"):
        more = source.readline(CHUNK)
        if not more:
            break
        if not rest:
            stripped = more.lstrip(b">")
            gts += len(more) - len(stripped)
            more = stripped
        rest += more
    quote = rest.startswith(b"From ")
    count = gts + quote
    while count:
        n = min(count, CHUNK)
        out.put(b">" * n)
        count -= n
    return rest
