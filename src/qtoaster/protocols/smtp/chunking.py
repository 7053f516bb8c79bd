"""BDAT (RFC 3030 CHUNKING): the command's grammar and the chunks' octets in queue form.

``BDAT <size> [LAST]``: exactly ``size`` octets follow the command line, with no
dot-stuffing and no end marker (RFC 3030 2).  A chunk's octets are message content, never
a command and never an end of data, whatever they hold (``LF.LF``, ``CR.CR``...).

Wire to message (what the queue stores, like DATA's framer: LF line ends):

- every line end becomes LF: ``CRLF``, a bare ``LF`` and a bare ``CR`` alike (a CR at the
  end of a chunk is decided by the next chunk's first octet).  A bare CR or LF is legal
  content under BDAT but not a line end every later hop agrees on; stored as LF it leaves
  as CRLF, dot-stuffed, when relayed by DATA, so no ``.`` line can appear that the sender
  did not mean as a line (SMTP smuggling);
- a message that does not end with a line end gets one (the queue's messages end with LF,
  as every DATA message does); ``BDAT 0 LAST`` alone is the empty message;
- hops: Received/Delivered header lines counted as DATA counts them (on the LF form).

Invariants: pure; memory is bounded by the piece fed (one CR held between pieces), never
by ``size``; any split of the octets gives the same output.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp.dataframe import HopCounter

MAX_SIZE_DIGITS = 20
"""A chunk size longer than this is a syntax error (2^64 has 20 digits; RFC 3030 has no cap)."""

BDAT_SYNTAX = Reply(501, "syntax error, BDAT needs a size and at most LAST, closing (#5.5.4)")
"""Without a size the chunk's end is unknown: its octets would be read as commands, so close."""

DATA_AFTER_BDAT = Reply(503, "DATA and BDAT cannot be mixed in one transaction (#5.5.1)")
"""RFC 3030 2: DATA after a BDAT of the same transaction is a 503; RSET clears it."""

BDAT_EXPECTED = Reply(503, "BDAT or RSET expected (#5.5.1)")
"""A command that would start or change a transaction between two chunks."""

BINARYMIME_NEEDS_BDAT = Reply(503, "BODY=BINARYMIME needs BDAT, not DATA (#5.5.1)")
"""RFC 3030 3: a BINARYMIME message cannot be sent with DATA (reply 503 5.5.1)."""


def octets_received(size: int) -> Reply:
    """The reply to a chunk that is not the last (RFC 3030 2 example: ``250 n octets``)."""
    return Reply(250, f"{size} octets received")


@dataclass(frozen=True, slots=True)
class BdatCommand:
    size: int
    last: bool


def parse_bdat(argument: str) -> BdatCommand | None:
    """``<digits> [LAST]`` (LAST in any case, spaces between) or None for anything else."""
    words = argument.split(" ")
    words = [w for w in words if w]
    if not 1 <= len(words) <= 2:
        return None
    size = words[0]
    if not (size.isascii() and size.isdigit()) or len(size) > MAX_SIZE_DIGITS:
        return None
    if len(words) == 2 and words[1].upper() != "LAST":
        return None
    return BdatCommand(int(size), len(words) == 2)


class ChunkReader:
    """One message's BDAT chunks: how many octets the current chunk still has, and the
    queue form of the octets fed (see the module docstring)."""

    def __init__(self, size: int, last: bool) -> None:
        self.size = size
        self.remaining = size
        self.last = last
        self._cr = False  # the octets so far end with a CR not yet known to be a CRLF
        self._ends_line = True  # the output so far is empty or ends with LF
        self._hops = HopCounter()

    @property
    def hops(self) -> int:
        return self._hops.hops

    def next_chunk(self, size: int, last: bool) -> None:
        """Another ``BDAT`` of the same message."""
        if self.remaining:
            raise ValueError("the current chunk is not complete")
        self.size = self.remaining = size
        self.last = last

    def feed(self, raw: bytes) -> bytes:
        """Octets of the current chunk (at most ``remaining``); their queue form."""
        if len(raw) > self.remaining:
            raise ValueError("more octets than the chunk has")
        self.remaining -= len(raw)
        if not raw:
            return b""
        if self._cr:
            raw, self._cr = b"\r" + raw, False
        if raw.endswith(b"\r"):
            raw, self._cr = raw[:-1], True
        out = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if out:
            self._ends_line = out.endswith(b"\n")
            self._hops.feed(out)
        return out

    def finish(self) -> bytes:
        """After the last chunk: the held CR as a line end, or a LF ending the last line."""
        tail = b"\n" if self._cr or not self._ends_line else b""
        self._cr, self._ends_line = False, True
        self._hops.feed(tail)
        return tail
