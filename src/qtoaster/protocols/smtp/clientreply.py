"""Reading the SMTP server's replies for the client engine (``client.py``): reply lines
gathered into a reply (RFC 5321 4.2), and the EHLO keywords.

Invariants: pure; a reply has at most ``MAX_REPLY_LINES`` lines; a line that is not a reply
line (no 3-digit code 2xx-5xx, no space or hyphen after it, or too long) raises
:class:`Malformed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.core.errors import ProtocolError

MAX_REPLY_LINE = 2048
"""Bytes per reply line with its CRLF (RFC 5321 4.5.3.1.5 asks for 512; we allow slack)."""
MAX_REPLY_LINES = 100
"""Lines per reply: an EHLO answer has a dozen."""


class Malformed(ProtocolError):
    """Not a reply line (the engine ends the session)."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # as received, code included, CRs removed (qmail's get())

    @property
    def said(self) -> str:
        return "\nRemote host said: " + "\n".join(self.lines) + "\n"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def fail_letter(code: int) -> str:
    return "D" if code >= 500 else "Z"


class ReplyReader:
    """The lines of the reply being read."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def clear(self) -> None:
        self._lines = []

    def add(self, raw: object) -> Reply | None:
        """Add a line (``bytes``; anything else is a line that was too long): the reply when
        complete, None for more.  Raises Malformed when it is not a reply line."""
        if not isinstance(raw, bytes):  # TOO_LONG
            raise Malformed
        line = raw.replace(b"\r", b"")
        if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345":
            raise Malformed
        if len(line) > 3 and line[3:4] not in b" -":
            raise Malformed
        self._lines.append(line.decode("utf-8", "surrogateescape"))
        if len(self._lines) > MAX_REPLY_LINES:
            raise Malformed
        if line[3:4] == b"-":
            return None
        # RFC 5321 4.2.1: the last line's code counts (qmail's smtpcode() does the same).
        lines, self._lines = tuple(self._lines), []
        return Reply(int(line[:3]), lines)


def parse_ehlo(lines: tuple[str, ...]) -> dict[str, str | None]:
    """EHLO keywords (RFC 5321 4.1.1.1), upper-cased, each with its parameters or None."""
    extensions: dict[str, str | None] = {}
    for line in lines[1:]:
        words = line[4:].split(None, 1)
        if words:
            extensions[words[0].upper()] = words[1].strip() if len(words) > 1 else None
    return extensions
