"""Framing of IMAP client input: bytes in, complete commands (line parts + literals) out.

An IMAP command is one line, except that an argument may be a literal: the line ends with
``{n}`` (synchronizing: the server sends a continuation first), ``{n+}`` (RFC 7888
LITERAL+, the bytes follow at once) or ``~{n}`` (RFC 3516 literal8, APPEND only); then come
``n`` bytes, then the rest of the command line, which may end in another literal. The
:class:`Framer` cuts the input into :class:`RawCommand` values (the line parts without
their markers, and the literals) that the grammar (parser.py) reads; it knows nothing of
the grammar except where a literal marker is and which command a line starts (the limit
of an APPEND literal is not that of a LOGIN literal).

Limits (constructor arguments of server.ImapConnection):
- the line parts of one command together (CRLF included) at most ``max_line`` bytes;
- the literals of one command together at most ``max_literal`` bytes for APPEND (so one
  MULTIAPPEND is bounded too) and ``max_string_literal`` for any other command.

Over a limit the command is refused (:class:`FrameError`, which the engine answers) and
its bytes are skipped: a line to its LF, a non-synchronizing literal by counting (never
buffered), and so on to the end of the command; a synchronizing literal over the limit is
refused before the client sends it (no continuation), so the command ends there.

Invariants: no I/O; literal bytes are moved into the literal being read as they arrive,
never held as a line; after :meth:`Framer.take` returned None, at most ``max_line``
input bytes stay buffered; a skipped literal's bytes are counted and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

# "{123}", "{123+}", "~{123}" at the very end of a line (CR already stripped). Twenty
# digits bound the int() below; longer is no literal and the grammar refuses the "{".
_MARKER = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
_MARKER_SPAN: Final = 26  # the longest marker: "~{" + 20 digits + "+}" plus slack
# tag SP [UID SP] name: which command a line starts (for the literal limit).
# A tag is ASCII: 1*<ASTRING-CHAR except "+"> (RFC 9051 9).
_HEAD = re.compile(rb"([^\x00-\x20\x7f-\xff(){%*\"\\+]+) (?:[Uu][Ii][Dd] )?([A-Za-z]+)")
_TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+(?= )")

LINE_TOO_LONG: Final = "line too long"
LITERAL_TOO_BIG: Final = "literal too big"
LITERAL8_NOT_HERE: Final = "literal8 is only allowed in APPEND"


@dataclass(frozen=True, slots=True)
class RawCommand:
    """One complete command: ``parts[i]`` is followed by ``literals[i]`` (so there is one
    part more than literals); ``binary[i]`` tells a literal8."""

    parts: tuple[bytes, ...]
    literals: tuple[bytes, ...]
    binary: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class FrameError:
    """A command refused while framing: the engine answers ``tag status [code] text``
    (``* BAD ...`` when ``tag`` is None)."""

    tag: str | None
    status: str
    code: str | None
    text: str


def tag_of(line: bytes) -> str | None:
    """The tag a line starts with, if it has a well-formed one followed by a space."""
    m = _TAG.match(line)
    return m.group().decode("ascii") if m else None


class Framer:
    def __init__(
        self,
        *,
        max_line: int,
        max_literal: int,
        max_string_literal: int,
        on_continue: Callable[[], None],
    ) -> None:
        self._max_line = max_line
        self._max_literal = max_literal
        self._max_string_literal = max_string_literal
        self._on_continue = on_continue  # a synchronizing literal was accepted: send "+"
        self._buf = b""
        self._pos = 0
        self.eof = False
        self._reset()

    def _reset(self) -> None:
        self._parts: list[bytes] = []
        self._literals: list[bytes] = []
        self._binary: list[bool] = []
        self._line_total = 0  # bytes of the line parts so far, line ends included
        self._literal_total = 0
        self._limit = 0  # the literal limit of the command being read (known at part 0)
        self._append = False
        self._tag: str | None = None
        self._chunks: list[bytes] = []  # the literal being read
        self._need = 0  # literal bytes still to come (read, or skip when _skipping)
        self._skipping = False  # the command was refused: drop its bytes to its end
        self._skip_tail = b""  # the last bytes of a line being skipped (for its marker)
        self._in_literal = False

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def idle(self) -> bool:
        """No command begun: nothing of a command is held (for EOF and mode changes)."""
        return not (self._parts or self._in_literal or self._skipping) and self.buffered == 0

    def feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
        elif self._pos >= len(self._buf):
            self._buf, self._pos = bytes(data), 0
        else:
            self._buf, self._pos = self._buf[self._pos :] + data, 0

    def clear(self) -> None:
        """Drop every byte held, a partial command included (STARTTLS injection)."""
        self._buf, self._pos = b"", 0
        self._reset()

    def take_line(self, limit: int) -> bytes | Literal[False] | None:
        """A plain line (AUTHENTICATE, IDLE): without CR LF, no literal looked for; False
        when it is longer than ``limit`` (then skipped to its LF like a command line)."""
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos, pos + limit)
        if nl >= 0:
            self._pos = nl + 1
            return buf[pos : nl - 1] if nl > pos and buf[nl - 1] == 13 else buf[pos:nl]
        if len(buf) - pos >= limit:
            self._pos = pos + limit
            self._skipping, self._skip_tail = True, b""
            return False
        return None

    def take(self) -> RawCommand | FrameError | None:
        """The next complete command, a refusal, or None (more input needed)."""
        while True:
            if self._need:
                if not self._literal_bytes():
                    return None
                continue
            if self._skipping:
                if not self._skip_line():
                    return None
                continue
            result = self._line()
            if not isinstance(result, _More):
                return result

    # -- the parts ------------------------------------------------------------------------

    def _literal_bytes(self) -> bool:
        """Move literal bytes from the input; True once the literal is complete."""
        buf, pos = self._buf, self._pos
        take = min(self._need, len(buf) - pos)
        if take <= 0:
            return False
        if not self._skipping:
            self._chunks.append(buf[pos : pos + take] if take < len(buf) or pos else buf)
        self._need -= take
        if self._pos + take >= len(buf):
            self._buf, self._pos = b"", 0
        else:
            self._pos = pos + take
        if self._need:
            return False
        if not self._skipping:
            self._literals.append(b"".join(self._chunks))
            self._chunks = []
            self._in_literal = False
        return True

    def _skip_line(self) -> bool:
        """Drop the rest of a refused command's line; True when it ended (then, if it ended
        in a non-synchronizing literal marker, that literal is skipped too)."""
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos)
        if nl < 0:
            self._skip_tail = (self._skip_tail + buf[pos:])[-_MARKER_SPAN:]
            self._buf, self._pos = b"", 0
            return False
        line = (self._skip_tail + buf[max(pos, nl - _MARKER_SPAN) : nl]).rstrip(b"\r")
        self._pos = nl + 1
        self._skip_tail = b""
        m = _MARKER.search(line)
        if m is not None and m.group(3):
            self._need = int(m.group(2))  # still _skipping: counted, dropped, then the line
            return True
        self._reset()
        return True

    def _line(self) -> RawCommand | FrameError | _More | None:
        buf, pos = self._buf, self._pos
        room = self._max_line - self._line_total
        nl = buf.find(b"\n", pos, pos + room)
        if nl < 0:
            if len(buf) - pos < room:
                return None
            tag = self._tag if self._parts else tag_of(buf[pos : pos + room])
            self._pos = pos + room
            self._reset()
            self._skipping = True
            return FrameError(tag, "BAD", "TOOBIG", LINE_TOO_LONG)
        end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        self._pos = nl + 1
        self._line_total += nl + 1 - pos
        m = _MARKER.search(buf, max(pos, end - _MARKER_SPAN), end)
        if m is None:
            self._parts.append(buf[pos:end])
            raw = RawCommand(tuple(self._parts), tuple(self._literals), tuple(self._binary))
            self._reset()
            return raw
        part = buf[pos : m.start()]
        if not self._parts:
            head = _HEAD.match(part)
            self._tag = tag_of(part)
            self._append = head is not None and head.group(2).upper() == b"APPEND"
            self._limit = self._max_literal if self._append else self._max_string_literal
        size, binary, sync = int(m.group(2)), bool(m.group(1)), not m.group(3)
        refusal = None
        if binary and not self._append:
            refusal = FrameError(self._tag, "BAD", None, LITERAL8_NOT_HERE)
        elif self._literal_total + size > self._limit:
            status = "NO" if self._append else "BAD"
            refusal = FrameError(self._tag, status, "TOOBIG", LITERAL_TOO_BIG)
        if refusal is not None:
            self._reset()
            if not sync and size:
                self._skipping, self._need = True, size
            return refusal
        self._parts.append(part)
        self._binary.append(binary)
        self._literal_total += size
        self._in_literal = True
        if size == 0:
            self._literals.append(b"")
            self._in_literal = False
        else:
            self._need = size
        if sync:
            self._on_continue()
        return _MORE


class _More:
    """Internal: a line part ended in a literal, go on reading."""


_MORE: Final = _More()
