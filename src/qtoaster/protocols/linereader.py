"""The input side of a line-based sans-IO engine (SMTP, POP3): bytes in, bounded lines out.

Invariants: no I/O; a line is returned without its LF (the caller strips a CR); a line
longer than ``limit`` bytes (LF included) is reported once as TOO_LONG and the rest of it,
up to its LF, is skipped; after ``take_line`` returned None less than ``limit`` bytes stay
buffered; ``clear`` drops everything, a partial line included (STARTTLS/STLS injection).
"""

from __future__ import annotations

import enum
from typing import Final


class _TooLong(enum.Enum):
    TOO_LONG = enum.auto()


TOO_LONG: Final = _TooLong.TOO_LONG


class LineReader:
    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0  # start of the unread input in _buf
        self._discarding = False  # inside an over-long line
        self.eof = False

    @property
    def buffered(self) -> int:
        """Input bytes received but not yet taken."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` marks the end of input."""
        if not data:
            self.eof = True
        elif self._pos >= len(self._buf):
            self._buf, self._pos = bytes(data), 0
        else:
            self._buf, self._pos = self._buf[self._pos :] + data, 0

    def take_line(self, limit: int) -> bytes | _TooLong | None:
        """The next line (at most ``limit`` bytes with its LF) without LF, TOO_LONG, or None."""
        buf, pos = self._buf, self._pos
        if self._discarding:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._buf, self._pos = b"", 0
                return None
            pos, self._discarding = nl + 1, False
        # The limit counts the line end (RFC 5321 4.5.3.1.4), so the LF must be within it.
        nl = buf.find(b"\n", pos, pos + limit)
        if nl >= 0:
            self._pos = nl + 1
            return buf[pos:nl]
        if len(buf) - pos >= limit:
            self._discarding = True
            self._pos = pos + limit
            return TOO_LONG
        self._pos = pos
        return None

    def take_all(self) -> bytes:
        """Everything buffered (empty if nothing): for a framer that reads raw bytes."""
        chunk = self._buf[self._pos :] if self._pos else self._buf
        self._buf, self._pos = b"", 0
        return chunk

    def take(self, limit: int) -> bytes:
        """At most ``limit`` buffered bytes (a BDAT chunk's octets); the rest stays."""
        chunk = self._buf[self._pos : self._pos + limit]
        self._pos += len(chunk)
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        return chunk

    def put_back(self, rest: bytes) -> None:
        """Bytes taken by :meth:`take_all` that were not used (commands after DATA's dot)."""
        self._buf, self._pos = rest + self.take_all(), 0

    def clear(self) -> None:
        """Drop every byte buffered, a partial (or over-long) line included."""
        self._buf, self._pos = b"", 0
        self._discarding = False
