"""The message a remote delivery sends, as the queue stores it, and the two facts about it
that must be known before the first command goes out.

Both checks read the queue file, never the whole message into memory: whether the last
line ends in LF (qmail-remote refuses partial final lines, spec 17.3) and whether any byte
is > 127 (it decides ``BODY=8BITMIME``, RFC 6152).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Body:
    """The message as stored in the queue: ``path`` from ``offset``, ``size`` bytes."""

    path: str
    offset: int
    size: int


def body_lacks_final_lf(body: Body) -> bool:
    """True when the message does not end with LF (an empty message is fine)."""
    if body.size == 0:
        return False
    try:
        with open(body.path, "rb") as stream:
            stream.seek(body.offset + body.size - 1)
            return stream.read(1) != b"\n"
    except OSError:
        return False  # the send itself will report the trouble


def has_eight_bit(body: Body) -> bool:
    """Whether any byte of the message is > 127; an unreadable file counts as 7-bit."""
    try:
        with open(body.path, "rb") as stream:
            stream.seek(body.offset)
            while chunk := stream.read(1 << 20):
                if not chunk.isascii():
                    return True
    except OSError:
        pass
    return False
