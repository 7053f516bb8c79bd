"""The IMAP grammar's building blocks (RFC 9051 9, RFC 3501 9): a cursor over one framed
command and the readers of atoms, strings, numbers, sequence sets, flags and dates.

A :class:`Cursor` walks the command's line parts (decoded UTF-8 with surrogateescape, so
every byte is recoverable) and, at the end of each part but the last, its literal. Each
reader consumes what it recognises or raises :class:`ParseError` with the text of the
``BAD`` answer. Readers are regex matches at the cursor: no per-character Python loop.

Invariants: no I/O; a reader either advances the cursor over exactly what it returns or
raises; every number returned fits the grammar's range (number: 32 bits, number64: 63).
"""

from __future__ import annotations

import datetime
import re
from typing import Final

from qtoaster.core.errors import FormatError
from qtoaster.protocols.imap.commands import STAR, SequenceSet
from qtoaster.protocols.imap.lexer import RawCommand

MAX_NUMBER: Final = 2**32 - 1
MAX_NUMBER64: Final = 2**63 - 1

_ATOM = re.compile(r'[^\x00-\x20\x7f(){%*"\\\]]+')
_ASTRING_ATOM = re.compile(r'[^\x00-\x20\x7f(){%*"\\]+')  # ASTRING-CHAR: atom-char or "]"
_LIST_ATOM = re.compile(r'[^\x00-\x20\x7f(){"\\]+')  # list-char: also "%", "*", "]"
_QUOTED = re.compile(r'"((?:[^"\\\r\n]|\\["\\])*)"')
_ESCAPE = re.compile(r"\\([\"\\])")
_NUMBER = re.compile(r"[0-9]{1,20}")
_SEQ_NUM = r"(?:[0-9]{1,10}|\*)"
_SEQSET = re.compile(rf"{_SEQ_NUM}(?::{_SEQ_NUM})?(?:,{_SEQ_NUM}(?::{_SEQ_NUM})?)*")
_FLAG = re.compile(r'\\?[^\x00-\x20\x7f(){%*"\\\]]+')
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    r'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) '
    r'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
# System flags in their RFC 9051 spelling (flags are case-insensitive; keywords are kept
# as written, the session compares them case-insensitively).
_SYSTEM_FLAGS: Final = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


class ParseError(FormatError):
    """The command is malformed: ``text`` is the BAD answer's text (``code`` its code)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.tag: str | None = None  # set by parser.parse_command once the tag is read


class Cursor:
    __slots__ = ("binary", "i", "last", "literals", "parts", "pos", "s")

    def __init__(self, raw: RawCommand) -> None:
        self.parts = [p.decode("utf-8", "surrogateescape") for p in raw.parts]
        self.literals = raw.literals
        self.binary = raw.binary
        self.i = 0
        self.last = len(self.parts) - 1
        self.s = self.parts[0]
        self.pos = 0

    # -- position -------------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.s) and self.i == self.last

    def at_literal(self) -> bool:
        return self.pos >= len(self.s) and self.i < self.last

    def peek(self) -> str:
        """The next character ("" at the end of a part)."""
        return self.s[self.pos : self.pos + 1]

    def skip(self, text: str) -> bool:
        """Consume ``text`` (exact case) if it comes next."""
        if self.s.startswith(text, self.pos):
            self.pos += len(text)
            return True
        return False

    def expect(self, text: str, what: str) -> None:
        if not self.skip(text):
            raise ParseError(f"expected {what}")

    def sp(self) -> None:
        if not self.skip(" "):
            raise ParseError("expected a space")

    def open(self) -> None:
        self.expect("(", "(")

    def close(self) -> None:
        self.expect(")", ")")

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected characters at the end of the command")

    def match(self, regex: re.Pattern[str]) -> str | None:
        m = regex.match(self.s, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    def literal(self) -> tuple[bytes, bool]:
        """The literal that follows (its bytes, whether it is a literal8)."""
        if not self.at_literal():
            raise ParseError("expected a literal")
        data, binary = self.literals[self.i], self.binary[self.i]
        self.i += 1
        self.s, self.pos = self.parts[self.i], 0
        return data, binary

    # -- atoms and strings ----------------------------------------------------------------

    def atom(self, what: str = "an atom") -> str:
        text = self.match(_ATOM)
        if text is None:
            raise ParseError(f"expected {what}")
        return text

    def keyword(self) -> str:
        """An atom upper-cased (command names, options, item names)."""
        return self.atom().upper()

    def quoted(self) -> str | None:
        m = _QUOTED.match(self.s, self.pos)
        if m is None:
            if self.peek() == '"':
                raise ParseError("bad quoted string")
            return None
        self.pos = m.end()
        text = m.group(1)
        return _ESCAPE.sub(r"\1", text) if "\\" in text else text

    def string(self) -> str:
        text = self.quoted()
        if text is not None:
            return text
        if self.at_literal():
            data, binary = self.literal()
            if binary:
                raise ParseError("literal8 is not a string")
            return data.decode("utf-8", "surrogateescape")
        raise ParseError("expected a string")

    def astring(self) -> str:
        text = self.match(_ASTRING_ATOM)
        return text if text is not None else self.string()

    def nstring(self) -> str | None:
        if self.s.startswith(("NIL", "nil", "Nil"), self.pos):
            after = self.s[self.pos + 3 : self.pos + 4]
            if after in ("", " ", ")"):
                self.pos += 3
                return None
        return self.string()

    def list_mailbox(self) -> str:
        text = self.match(_LIST_ATOM)
        return text if text is not None else self.string()

    # -- numbers and sets -----------------------------------------------------------------

    def number(self, limit: int = MAX_NUMBER, nonzero: bool = False) -> int:
        text = self.match(_NUMBER)
        if text is None:
            raise ParseError("expected a number")
        value = int(text)
        if value > limit or (nonzero and value == 0):
            raise ParseError(f"number out of range: {text}")
        return value

    def sequence_set(self) -> SequenceSet:
        if self.skip("$"):
            return SAVED_SET
        text = self.match(_SEQSET)
        if text is None:
            raise ParseError("invalid sequence set")
        if text == "1:*":
            return ALL_SET
        ranges = []
        for item in text.split(","):
            low, colon, high = item.partition(":")
            a = STAR if low == "*" else int(low)
            b = a if not colon else STAR if high == "*" else int(high)
            if a == 0 or b == 0 or a > MAX_NUMBER or b > MAX_NUMBER:
                raise ParseError("invalid sequence set")
            ranges.append((a, b))
        return SequenceSet(tuple(ranges))

    # -- flags and dates ------------------------------------------------------------------

    def flag(self) -> str:
        text = self.match(_FLAG)
        if text is None:
            raise ParseError("expected a flag")
        if text[0] == "\\":
            return _SYSTEM_FLAGS.get(text.upper(), text)
        return text

    def flag_list(self) -> tuple[str, ...]:
        self.open()
        flags = []
        if not self.skip(")"):
            flags.append(self.flag())
            while self.skip(" "):
                flags.append(self.flag())
            self.close()
        return tuple(flags)

    def date(self) -> datetime.date:
        """date = date-text / DQUOTE date-text DQUOTE (``1-Feb-1994``)."""
        quoted = self.skip('"')
        m = _DATE.match(self.s, self.pos)
        if m is None or m.group(2).upper() not in _MONTHS:
            raise ParseError("invalid date")
        self.pos = m.end()
        if quoted:
            self.expect('"', "a closing quote")
        try:
            return datetime.date(int(m.group(3)), _MONTHS[m.group(2).upper()], int(m.group(1)))
        except ValueError:
            raise ParseError("invalid date") from None

    def date_time(self) -> datetime.datetime | None:
        """date-time (``"17-Jul-1996 02:44:25 -0700"``) if one comes next, else None."""
        m = _DATE_TIME.match(self.s, self.pos)
        if m is None:
            if self.peek() == '"':
                raise ParseError("invalid date-time")
            return None
        month = _MONTHS.get(m.group(2).upper())
        if month is None:
            raise ParseError("invalid date-time")
        day, year, hh, mm, ss, sign, zh, zm = (m.group(i) for i in (1, 3, 4, 5, 6, 7, 8, 9))
        offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
        try:
            zone = datetime.timezone(-offset if sign == "-" else offset)
            value = datetime.datetime(
                int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone
            )
        except ValueError:
            raise ParseError("invalid date-time") from None
        self.pos = m.end()
        return value

    def paren_list(self) -> tuple[str, ...]:
        """``(` atom *(SP atom) `)``, upper-cased; empty allowed."""
        self.open()
        items = []
        if not self.skip(")"):
            items.append(self.keyword())
            while self.skip(" "):
                items.append(self.keyword())
            self.close()
        return tuple(items)


ALL_SET: Final = SequenceSet(((1, STAR),))
SAVED_SET: Final = SequenceSet((), saved=True)
