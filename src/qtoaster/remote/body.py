"""The message a remote delivery sends, as the queue stores it, and the two facts about it
that must be known before the first command goes out.

The remote delivery process cannot open the queue: it is handed each message as an open
descriptor of the queue file (``remote/link.py``), so everything here reads with
``os.pread`` from that descriptor (no shared file position, safe from a thread), and never
the whole message into memory.  Both checks: whether the last line ends in LF (qmail-remote
refuses partial final lines, spec 17.3) and whether any byte is > 127 (it decides
``BODY=8BITMIME``, RFC 6152).  The descriptor belongs to whoever made the Body; nothing here
closes it.

``head``: bytes the send role puts in front of the queued message (the DKIM-Signature
fields of ``send/signing.py``, LF line ends like the message); they are sent first and count
in every fact about the message (its length for SIZE=, its 8-bit scan).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Body:
    """The message as stored in the queue: descriptor ``fd`` from ``offset``, ``size`` bytes,
    sent after ``head``."""

    fd: int
    offset: int
    size: int
    head: bytes = b""

    @property
    def length(self) -> int:
        """What goes out: the head and the stored message."""
        return len(self.head) + self.size


def chunks(body: Body, chunk: int = CHUNK) -> Iterator[bytes]:
    """The head, then the message in pieces of at most ``chunk`` bytes; raises OSError if
    unreadable.  A file shorter than ``size`` ends early (the caller's encoder notices the
    missing end)."""
    if body.head:
        yield body.head
    position, end = body.offset, body.offset + body.size
    while position < end:
        data = os.pread(body.fd, min(chunk, end - position), position)
        if not data:
            return
        position += len(data)
        yield data


def body_lacks_final_lf(body: Body) -> bool:
    """True when the message does not end with LF (an empty message is fine; the head
    always ends with LF, so only the stored part can lack it)."""
    if body.size == 0:
        return False
    try:
        return os.pread(body.fd, 1, body.offset + body.size - 1) != b"\n"
    except OSError:
        return False  # the send itself will report the trouble


def has_eight_bit(body: Body) -> bool:
    """Whether any byte of the message is > 127; an unreadable file counts as 7-bit."""
    try:
        return any(not chunk.isascii() for chunk in chunks(body, 1 << 20))
    except OSError:
        return False
