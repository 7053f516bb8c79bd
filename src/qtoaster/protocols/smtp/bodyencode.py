"""Streaming DATA encoding for the SMTP client: qmail-remote's ``blast()`` (spec 17.3).

Message to wire, as qmail-remote does it:

- every LF becomes CRLF; a CR is data and passes as is, so a stored ``CR LF`` goes out as
  ``CR CR LF`` (the queue stores LF line ends; qmail-smtpd's framing keeps a lone CR as data,
  so the receiver stores the very bytes we read);
- a line that starts with ``.`` gets one more (RFC 5321 4.5.2); the first line counts;
- :meth:`BodyEncoder.finish` returns the terminating ``.CRLF``; a message that does not end
  with LF cannot be sent (qmail: permanent ``SMTP cannot transfer messages with partial final
  lines. (#5.6.2)``), so ``finish`` raises :class:`PartialLineError` instead.  An empty
  message is fine (qmail sends only the dot).

Invariants: work per chunk with ``bytes.replace`` (no per-byte loop); one bit of state (are
we at the start of a line) between chunks, so any split of the input gives the same output.
"""

from __future__ import annotations

from qtoaster.core.errors import ProtocolError

PARTIAL_LINE_TEXT = "SMTP cannot transfer messages with partial final lines. (#5.6.2)"


class PartialLineError(ProtocolError, ValueError):
    """The message did not end with LF; ``str(error)`` is qmail-remote's permanent text."""

    def __init__(self) -> None:
        super().__init__(PARTIAL_LINE_TEXT)


class BodyEncoder:
    def __init__(self) -> None:
        self._line_start = True  # the next byte starts a line

    def encode(self, chunk: bytes) -> bytes:
        """The wire form of the next piece of the message (it may split anywhere)."""
        if not chunk:
            return b""
        head = b"." if self._line_start and chunk[:1] == b"." else b""
        self._line_start = chunk[-1:] == b"\n"
        # Stuff first, in LF form, so a dot after a split CRLF is still seen as line start.
        return head + chunk.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        """The end of data, ``.CRLF`` (the last line's CRLF is already out)."""
        if not self._line_start:
            raise PartialLineError()
        return b".\r\n"
