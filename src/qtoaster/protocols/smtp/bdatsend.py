"""Sending a message by BDAT (RFC 3030 CHUNKING), for a message received with
``BODY=BINARYMIME``: what the client engine (``client.py``) writes and how the driver cuts
the body into chunks.

- The queue stores LF line ends; each LF goes out as CRLF, as the DATA path does
  (``bodyencode.py``), and every other octet as it is.  No dot-stuffing: BDAT counts octets
  and has no end-of-data line (RFC 3030 2).
- :class:`ChunkFramer` turns the stored pieces into chunks of exactly ``size`` wire octets
  (``BDAT_CHUNK``, 1 MiB), the last one shorter; the last chunk is never empty unless the
  whole message is (then it is ``BDAT 0 LAST``, RFC 3030 2 allows it).
- :func:`bdat_command` is ``BDAT <n>`` or ``BDAT <n> LAST`` with its CRLF; the ``n``
  octets follow it at once.

Invariants: pure; the framer holds under ``size`` plus twice one fed piece of converted
bytes, so memory is bounded by the chunk size, never by the message; any split of the
input gives the same chunks.
"""

from __future__ import annotations

BDAT_CHUNK = 1 << 20
"""Wire octets per BDAT chunk (the last one of a message may be shorter)."""


def bdat_command(size: int, last: bool) -> bytes:
    """The command line that announces ``size`` octets (RFC 3030 2)."""
    return b"BDAT %d%s\r\n" % (size, b" LAST" if last else b"")


def wire_form(stored: bytes) -> bytes:
    """A piece of the stored message as it goes out: LF becomes CRLF, nothing else changes."""
    return stored.replace(b"\n", b"\r\n")


class ChunkFramer:
    """Stored message pieces in, BDAT chunk contents out."""

    def __init__(self, size: int = BDAT_CHUNK) -> None:
        if size < 1:
            raise ValueError("a BDAT chunk has at least one octet")
        self._size = size
        self._buf = bytearray()

    def feed(self, stored: bytes) -> list[bytes]:
        """The full chunks the message has so far; one is always kept back while anything
        is buffered, so that :meth:`finish` has the last one."""
        self._buf += wire_form(stored)
        out: list[bytes] = []
        while len(self._buf) > self._size:
            out.append(bytes(self._buf[: self._size]))
            del self._buf[: self._size]
        return out

    def finish(self) -> bytes:
        """The last chunk (``b""`` for an empty message)."""
        last, self._buf = bytes(self._buf), bytearray()
        return last
