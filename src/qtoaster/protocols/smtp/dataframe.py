"""Streaming DATA framing: the body transparency rules of qmail-smtpd's ``blast()`` (spec 3.6).

Wire to message:

- ``CRLF`` becomes ``LF``; a lone CR is kept as data (qmail); ``CR.CR`` never ends anything.
- A line that starts with ``.`` loses that dot (RFC 5321 4.5.2), except qmail's quirk: a
  line starting ``.`` CR (not followed by LF) keeps it.
- ``CRLF.CRLF`` ends the data (the first line counts as following a CRLF).
- A bare LF (one not preceded by CR) anywhere before the end, including ``LF.LF`` or
  ``CRLF.LF``, raises :class:`BareLineFeed`: this is the SMTP smuggling defence, qmail answers
  ``451 See http://pobox.com/~djb/docs/smtplf.html.`` and drops the connection.
- Hops: header lines (until the first empty line) whose first 8/9 bytes are ``Received`` /
  ``Delivered``, case-insensitively, counted on the wire bytes like qmail (netqmail looks at
  no more than the first 9 bytes of a line, spec 23.8).

Invariants: work is done per chunk with ``bytes.find``/``count``/``replace`` and one regex
(no per-byte Python loop; the header scan is per line and stops at the first empty line); at
most 4 bytes (a possible prefix of ``CRLF.CRLF``) are held back between chunks, so memory is
bounded by the chunk, never by the message; any split of the input gives the same output.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from qtoaster.core.errors import ProtocolError

_END = b"\r\n.\r\n"
# The dot at the start of a line is removed unless a CR follows (qmail blast() state 3).
_STUFFED_DOT = re.compile(rb"\r\n\.(?!\r)")


class BareLineFeed(ProtocolError, ValueError):
    """A LF without CR before it inside DATA (spec 3.6)."""


class Framed(NamedTuple):
    payload: bytes  # message bytes (LF line ends), possibly empty
    end: int | None  # index in the fed chunk just past CRLF.CRLF, or None if not yet seen


class HopCounter:
    """Counts Received/Delivered header lines in bytes fed in any split: raw CRLF lines
    (DATA) or LF lines (BDAT's queue form, protocols/smtp/chunking.py)."""

    def __init__(self) -> None:
        self.hops = 0
        self._in_header = True
        self._head = b""  # the first (up to 9) bytes of the current line

    def feed(self, raw: bytes) -> None:
        pos = 0
        while self._in_header:
            nl = raw.find(b"\n", pos)
            stop = len(raw) if nl < 0 else nl + 1
            if len(self._head) < 9:
                self._head += raw[pos : min(stop, pos + 9 - len(self._head))]
            if nl < 0:
                return
            self._end_of_line()
            pos = nl + 1

    def _end_of_line(self) -> None:
        head, self._head = self._head, b""
        if head.startswith((b"\r\n", b"\n")):  # an empty line (LF alone: BDAT's queue form)
            self._in_header = False
        elif head[:8].lower() == b"received" or head[:9].lower() == b"delivered":
            self.hops += 1


class DataFramer:
    """Feed wire chunks after the 354; get message bytes until ``CRLF.CRLF``."""

    def __init__(self) -> None:
        # The data starts as if after a CRLF, so a first line "." ends it and ".x" is unstuffed.
        # That virtual CRLF turns into one LF of output, dropped by _emit.
        self._tail = b"\r\n"
        self._virtual_lf = True
        self._hops = HopCounter()
        self.finished = False

    @property
    def hops(self) -> int:
        return self._hops.hops

    def feed(self, chunk: bytes) -> Framed:
        """Frame the next chunk.  Raises :class:`BareLineFeed`; never call after the end."""
        if self.finished:
            raise ValueError("DATA already ended")
        held = len(self._tail)
        buf = self._tail + chunk
        end = buf.find(_END)
        if end >= 0:
            region, self._tail = buf[: end + 2], b""  # the CRLF belongs to the last line
            used = end + len(_END) - held
            self._hops.feed(chunk[:used])
            self.finished = True
            return Framed(self._emit(region), used)
        keep = _held_suffix(buf)
        region, self._tail = buf[: len(buf) - keep], buf[len(buf) - keep :]
        self._hops.feed(chunk)
        return Framed(self._emit(region), None)

    def _emit(self, region: bytes) -> bytes:
        if b"\r\n." in region:
            region = _STUFFED_DOT.sub(b"\r\n", region)
        out = region.replace(b"\r\n", b"\n")
        # Each CRLF replaced shortens the text by one byte: if that is not every LF,
        # some LF had no CR before it (one pass fewer than counting both).
        if len(region) - len(out) != region.count(b"\n"):
            raise BareLineFeed("bare LF in DATA")
        if self._virtual_lf and out:
            self._virtual_lf = False
            out = out[1:]
        return out


def _held_suffix(buf: bytes) -> int:
    """Length of the longest proper prefix of CRLF.CRLF that ``buf`` ends with.

    Those bytes cannot be decided yet: a CR may pair with a coming LF, a line-start dot may
    be stuffing or the end, ``CRLF.CR`` may be the end.
    """
    for size in (4, 3, 2, 1):
        if buf.endswith(_END[:size]):
            return size
    return 0
